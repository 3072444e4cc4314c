# Two entry points for a fresh machine: `make demo` (set up, run the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
BUS := $(VENV)/bus.jpg
# Test-only oracle for the edge re-implementation's recipe: OpenCV-contrib in a venv of its own, because
# it and ultralytics' opencv-python both install the `cv2` package and overwrite each other.
OPENCV := $(VENV)/opencv-contrib

.PHONY: setup demo test lint bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	SAM2_BUILD_CUDA=0 $(PY) -m pip install --quiet --no-build-isolation sam2==1.1.0
	touch $@

$(OPENCV)/.installed:
	python3 -m venv $(OPENCV)
	$(OPENCV)/bin/python -m pip install --quiet numpy opencv-contrib-python-headless==5.0.0.93
	touch $@

# Local weights instead of downloads: make demo YOLO=path/to/yolov8n.pt SAM=path/to/sam_vit_b_01ec64.pth
YOLO ?=
SAM ?=

demo: setup
	$(PY) -c "import shutil; from ultralytics.utils import ASSETS; shutil.copy(ASSETS / 'bus.jpg', '$(BUS)')"
	$(VENV)/bin/samtasks instance $(BUS) --detector yolov8 --sam vit_b --format coco,png,yolo --out out/demo \
		$(if $(YOLO),--detector-weights $(YOLO)) $(if $(SAM),--sam-checkpoint $(SAM))

lint: setup
	$(VENV)/bin/ruff check samtasks tests benchmarks
	$(VENV)/bin/ruff format --check samtasks tests benchmarks

test: lint $(OPENCV)/.installed
	SAMTASKS_OPENCV_PYTHON=$(OPENCV)/bin/python $(PY) -m pytest -q

bench: setup
	cd benchmarks && ../$(PY) speed_core.py && ../$(PY) speed_instance.py && ../$(PY) speed_amg.py
