# Two entry points: `make demo` (the main job: demonstrations -> ACT and Diffusion Policy -> comparison report)
# and `make test` (lint + the whole test suite).
# Both create .venv when it is missing. torch/torchvision are pinned here, not in pyproject.toml: these
# versions lie on this machine's local wheel cache (no CUDA download); elsewhere pip fetches them as usual.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
DEMO ?= outputs/demo
PRESETS := configs/train
# --resume=true where an earlier `make demo` left a checkpoint: an interrupted run continues, a finished one is kept
resume = $(if $(wildcard $(1)/checkpoints/last),--resume=true)
# true where mixed precision pays (a GPU, or a CPU with native bfloat16), evaluated after the install
AMP = $(shell $(BIN)/python -c "import torch; from policylab.utils.device import cpu_has_native_bfloat16 as native; print(str(torch.cuda.is_available() or native()).lower())")

.PHONY: install demo study tune test lint interop clean

$(BIN)/policylab: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/policylab

# Every stage keeps what an earlier run finished: rerunning `make demo` resumes where it stopped. The demonstrations
# are the deterministic expert's (--expert.diversity=0: one push per situation), keypoints only; ACT trains in
# bfloat16 mixed precision where the CPU (AVX512-BF16, AMX) or GPU computes it natively, else in float32.
demo: install
	$(BIN)/policylab record --env.obs_type=environment_state_agent_pos --expert.diversity=0 \
		--dataset.root=$(DEMO)/pusht --dataset.num_episodes=800 --seed=0
	$(BIN)/policylab train --config_path=$(PRESETS)/act_pusht_keypoints_cpu.json --dataset.root=$(DEMO)/pusht \
		--training.amp=$(AMP) --output_dir=$(DEMO)/act $(call resume,$(DEMO)/act)
	$(BIN)/policylab train --config_path=$(PRESETS)/diffusion_pusht_keypoints_cpu.json --dataset.root=$(DEMO)/pusht \
		--output_dir=$(DEMO)/diffusion $(call resume,$(DEMO)/diffusion)
	$(BIN)/policylab compare --policies $(DEMO)/act $(DEMO)/diffusion --output_dir=$(DEMO)/report

# The ACT-vs-Diffusion study (docs/study.md): ~2.5 hours on a 2-core CPU; rerunning resumes it.
study: install
	$(BIN)/policylab study --config_path=configs/study/pusht_cpu.json

# The built-in small CPU study (<= 20 min here): the Diffusion keypoint preset shortened to 1000 steps, 8 trials
# over learning rate and prediction type, 2 workers, scored on max coverage (a finer signal than success after
# so few steps). Rerunning resumes it.
TUNE_SPACE := {"training.lr": {"low": 1e-4, "high": 3e-3, "log": true}, "policy.prediction_type": ["epsilon", "sample"]}
tune: install
	$(BIN)/policylab record --dataset.root=$(DEMO)/pusht --dataset.num_episodes=200 --seed=0
	$(BIN)/policylab tune --config_path=$(PRESETS)/diffusion_pusht_keypoints_cpu.json --dataset.root=$(DEMO)/pusht \
		--training.steps=1000 --tune.n_trials=8 --tune.n_workers=2 --eval.n_episodes=20 \
		--tune.space='$(TUNE_SPACE)' --tune.objective=avg_max_reward --output_dir=$(DEMO)/tune

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/python -m pytest -q

# The checks against real LeRobot (tests marked interop; `make test` skips those that need it): LeRobot 0.6.1 (v3.0
# datasets, Python 3.12) and 0.3.2 (v2.1, Python 3.11) in side venvs under .interop/, never policylab's dependency.
# Their video decoder needs the system's ffmpeg libraries (apt-get install ffmpeg).
PYTHON312 ?= python3.12
INTEROP := .interop
interop: install
	test -x $(INTEROP)/v30/bin/python || $(PYTHON312) -m venv $(INTEROP)/v30
	$(INTEROP)/v30/bin/pip install --quiet "lerobot[dataset,training,diffusion]==0.6.1"
	test -x $(INTEROP)/v21/bin/python || $(PYTHON) -m venv $(INTEROP)/v21
	$(INTEROP)/v21/bin/pip install --quiet "lerobot[pusht]==0.3.2" "numpy<2.3"
	LEROBOT_V30_PYTHON=$(INTEROP)/v30/bin/python LEROBOT_V21_PYTHON=$(INTEROP)/v21/bin/python \
		$(BIN)/python -m pytest -q -m interop

clean:
	rm -rf $(VENV) outputs
