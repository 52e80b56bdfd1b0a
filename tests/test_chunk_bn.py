"""MODEL.BN_CHUNK: BN statistics over fixed chunks of images, the same on one or many processes."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from calr_plugin import ConfigError
from calr_plugin.modeling.chunk_bn import check_chunk, convert_chunked_bn
from conftest import REPO
from tiny_calr import calr_cfg


def test_a_256_batch_in_4_chunks_equals_4_separate_64_image_bn_calls():
    torch.manual_seed(0)
    x = torch.randn(256, 6, 5, 3) * 3 + 1
    reference = nn.BatchNorm2d(6)
    nn.init.uniform_(reference.weight)
    nn.init.uniform_(reference.bias)
    chunked = nn.BatchNorm2d(6)
    chunked.load_state_dict(reference.state_dict())
    assert convert_chunked_bn(chunked, 64) == 1
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected = torch.cat([reference(part) for part in xa.split(64)])
    got = chunked(xb)
    assert torch.allclose(got, expected, atol=1e-5)
    for key in ("running_mean", "running_var"):
        assert torch.allclose(getattr(chunked, key), getattr(reference, key), atol=1e-5), key
    assert int(chunked.num_batches_tracked) == int(reference.num_batches_tracked) == 4
    (expected * torch.arange(6.0).view(1, 6, 1, 1)).sum().backward()
    (got * torch.arange(6.0).view(1, 6, 1, 1)).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, atol=1e-5)
    assert torch.allclose(chunked.weight.grad, reference.weight.grad, atol=1e-4)
    # Not plain BN over the whole batch: the chunks really are normalised apart.
    whole = nn.functional.batch_norm(x, None, None, reference.weight, reference.bias, training=True)
    assert not torch.allclose(got, whole, atol=1e-3)


def test_a_converted_model_keeps_its_checkpoint_keys_and_eval_features(tmp_path):
    from fastreid.modeling import build_model

    cfg = calr_cfg(tmp_path)
    plain = build_model(cfg).eval()
    chunked = build_model(cfg).eval()
    chunked.load_state_dict(plain.state_dict())
    n = convert_chunked_bn(chunked, 8)
    assert n > 10 and chunked.state_dict().keys() == plain.state_dict().keys()
    images = torch.rand(4, 3, 64, 32) * 255
    with torch.no_grad():
        assert torch.equal(plain({"images": images}), chunked({"images": images}))


def test_chunk_must_tile_the_batch_or_whole_processes():
    check_chunk(64, 256, 1)
    check_chunk(64, 256, 4)
    check_chunk(64, 256, 8)  # spans 2 processes of 32
    with pytest.raises(ConfigError, match="MODEL.BN_CHUNK = 48: expected a divisor of the 256 images"):
        check_chunk(48, 256, 1)
    with pytest.raises(ConfigError, match="MODEL.BN_CHUNK = 96"):
        check_chunk(96, 256, 8)


@pytest.mark.parametrize("chunk", [8, 16])
def test_one_process_and_two_gloo_processes_give_the_same_bn(tmp_path, chunk):
    """16 images per step: chunk 8 is one chunk per process, chunk 16 spans both processes."""
    results = {}
    for world in (1, 2):
        out = tmp_path / f"w{world}"
        out.mkdir()
        run = subprocess.run([sys.executable, os.path.join(REPO, "tests", "chunk_bn_ddp.py"), str(out), str(chunk),
                              str(world)], capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert run.returncode == 0, run.stderr[-3000:]
        results[world] = [np.load(out / f"rank{r}.npz") for r in range(world)]
    one, ranks = results[1][0], results[2]
    layers = sorted(k for k in one.files if k.startswith("local"))
    assert len(layers) == 2 and all(r.files == one.files for r in ranks)
    # Each rank's own chunk statistics, read before the gather that gives every rank the same
    # running statistics: chunk 8 = one chunk per rank, the one-process run's chunk r on rank r;
    # chunk 16 = one chunk over both ranks, the one-process run's single chunk on each.
    for key in layers:
        assert one[key].shape[0] == 16 // chunk
        for r, res in enumerate(ranks):
            want = one[key][r:r + 1] if chunk == 8 else one[key]
            assert res[key].shape == want.shape and np.allclose(res[key], want, atol=1e-5), (key, r)
    for res in ranks:  # and what each rank ends with (the gathered updates) is the one-process run's
        assert np.allclose(one["stats"], res["stats"], atol=1e-5)
    assert np.allclose(one["out"], np.concatenate([r["out"] for r in ranks]), atol=1e-4)


@pytest.mark.parametrize("batch,sizes", [(20, [8, 8, 4]), (17, [8, 9]), (5, [5]), (4, [4])])
def test_a_batch_that_does_not_tile_into_chunks_uses_whole_chunks_and_a_smaller_last_one(batch, sizes):
    # Chunk 8 on one process: 20 = 8 + 8 + 4; 17 = 8 + 9 (a last single image joins the chunk
    # before it); 5 and 4 (< 8, no processes to span) = plain BN over the batch. Outputs and
    # running statistics equal separate BN calls on those chunks, one after another.
    torch.manual_seed(1)
    x = torch.randn(batch, 3, 4, 2) * 2 + 0.5
    reference = nn.BatchNorm2d(3)
    nn.init.uniform_(reference.weight)
    chunked = nn.BatchNorm2d(3)
    chunked.load_state_dict(reference.state_dict())
    convert_chunked_bn(chunked, 8)
    expected = torch.cat([reference(part) for part in x.split(sizes)])
    got = chunked(x)
    assert torch.allclose(got, expected, atol=1e-5)
    for key in ("running_mean", "running_var"):
        assert torch.allclose(getattr(chunked, key), getattr(reference, key), atol=1e-6), key
    assert int(chunked.num_batches_tracked) == len(sizes)
