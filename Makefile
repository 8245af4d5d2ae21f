# The whole set-up on a fresh machine: `make test` and `make demo`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
CUDA_VENV ?= .venv-cuda
CUDA_TORCH_SPEC ?= torch==2.14.1
CUDA_ARCH ?= 9.0
PYTEST_ARGS ?=

PY := $(VENV)/bin/python
STAMP := $(VENV)/.dale_ext-installed

.PHONY: test demo cuda-check test-cuda-build test-sanitize bench study install clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

# torch first, then the package built against it (no build isolation: it would pull another torch).
$(STAMP): $(VENV)/bin/python pyproject.toml CMakeLists.txt $(shell find csrc -type f)
	$(VENV)/bin/pip install -q "$(TORCH_SPEC)" scikit-build-core pybind11 ninja numpy
	$(VENV)/bin/pip install -q --no-build-isolation -e ".[test]"
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/dale demo

bench: $(STAMP)
	$(PY) -m pytest benchmarks -q --benchmark-only --benchmark-columns=median,iqr,rounds

# DALE vs standard training under label noise (about two hours on 2 CPU cores; resumable: runs
# already in benchmarks/results/noisy_label_study.json are kept). One run: STUDY_ARGS="--only <id>".
study: $(STAMP)
	$(PY) -m benchmarks.noisy_label_study $(STUDY_ARGS)

# Compile the CUDA kernels for sm_90 against a CUDA build of torch, in a venv of their own, and
# import the result. Needs nvcc; no GPU (nothing CUDA runs here).
cuda-check:
	test -x $(CUDA_VENV)/bin/python || $(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_VENV)/bin/pip install -q "$(CUDA_TORCH_SPEC)" scikit-build-core pybind11 ninja numpy "cmake>=3.26"
	TORCH_CUDA_ARCH_LIST=$(CUDA_ARCH) $(CUDA_VENV)/bin/pip install -q --no-build-isolation --no-deps \
	  -C build-dir=build/cuda-check -C cmake.define.DALE_EXT_CUDA=ON .
	cd /tmp && $(abspath $(CUDA_VENV))/bin/python -c "import dale_ext, torch; \
	  assert dale_ext.cuda_built(), 'CUDA kernels missing'; \
	  missing = [op for op in ('fuzzy_split', 'class_gaussians', '_class_gaussians_with_status', '_class_gaussians_backward') \
	             if not torch._C._dispatch_has_kernel_for_dispatch_key('dale_ext::' + op, 'CUDA')]; \
	  assert not missing, missing; \
	  print('cuda-check: OK', dale_ext.build_info(), 'torch', torch.__version__)"

# The whole test suite against the CUDA build from cuda-check (torch 2.14.1+cu130 here): the
# installed package, not the source tree, so the tests run from a copy in a scratch directory.
# Without a GPU the CUDA tests skip; the CPU kernels and the Python code are exercised under the
# newer torch. Not part of CI (about three minutes more).
CUDA_TEST_DIR ?= /tmp/dale_ext-cuda-build-tests
test-cuda-build: cuda-check
	$(CUDA_VENV)/bin/pip install -q $$($(CUDA_VENV)/bin/python -c "import tomllib; \
	  print(' '.join(d for d in tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['test']))")
	rm -rf $(CUDA_TEST_DIR) && mkdir -p $(CUDA_TEST_DIR)
	cp -r python_tests benchmarks pyproject.toml $(CUDA_TEST_DIR)/
	cd $(CUDA_TEST_DIR) && $(abspath $(CUDA_VENV))/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# The whole test suite against a CPU build of the C++ kernels with AddressSanitizer and
# UndefinedBehaviorSanitizer (out-of-bounds reads of the micro-kernels' vector loads, padding and
# strip buffers; integer overflow; misaligned access), in a venv of its own. Python is not built
# with ASan, so the runtime is preloaded (libstdc++ too, or ASan cannot intercept C++ throws);
# leaks are not checked (CPython's are by design). The first report aborts the run; reports go to
# $(SAN_LOG).*. Not part of CI (about 7 minutes on 2 cores from scratch, 4 with the build kept).
SAN_VENV ?= .venv-asan
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
SAN_TEST_DIR ?= /tmp/dale_ext-sanitize-tests
SAN_LOG ?= /tmp/dale_ext-sanitize
test-sanitize:
	test -x $(SAN_VENV)/bin/python || $(PYTHON) -m venv $(SAN_VENV)
	$(SAN_VENV)/bin/pip install -q "$(TORCH_SPEC)" scikit-build-core pybind11 ninja numpy
	$(SAN_VENV)/bin/pip install -q --no-build-isolation ".[test]" -C build-dir=build/sanitize \
	  -C cmake.define.DALE_EXT_CUDA=OFF -C cmake.build-type=RelWithDebInfo \
	  -C "cmake.define.CMAKE_CXX_FLAGS=$(SAN_FLAGS)" -C "cmake.define.CMAKE_MODULE_LINKER_FLAGS=$(SAN_FLAGS)"
	rm -rf $(SAN_TEST_DIR) $(SAN_LOG).* && mkdir -p $(SAN_TEST_DIR)
	cp -r python_tests benchmarks pyproject.toml $(SAN_TEST_DIR)/
	cd $(SAN_TEST_DIR) && LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libstdc++.so)" \
	  ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:log_path=$(SAN_LOG) \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(SAN_LOG) \
	  $(abspath $(SAN_VENV))/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) \
	  || { cat $(SAN_LOG).* 2>/dev/null | head -40; exit 1; }
	@! ls $(SAN_LOG).* 2>/dev/null || { cat $(SAN_LOG).* | head -40; exit 1; }

clean:
	rm -rf build $(VENV) $(CUDA_VENV) $(SAN_VENV)
