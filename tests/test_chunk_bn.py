"""MODEL.BN_CHUNK: BN statistics over fixed chunks of images, the same on one or many processes."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from calr_plugin import ConfigError
from calr_plugin.chunk_bn import check_chunk, convert_chunked_bn
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
    one, (r0, r1) = results[1][0], results[2]
    assert np.allclose(r0["stats"], r1["stats"], atol=1e-6)  # every rank holds the same statistics
    assert np.allclose(one["stats"], r0["stats"], atol=1e-5)
    assert np.allclose(one["out"], np.concatenate([r0["out"], r1["out"]]), atol=1e-4)
