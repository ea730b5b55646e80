#!/usr/bin/env bash
# Fill .whl/ with Python 3.12 wheels of what the GPU image lacks, for tools/gpu_check.sh (carry .whl).
# Needs network to PyPI here and a Python 3.12 interpreter (PY312) to rebuild learn2learn.
set -euo pipefail
cd "$(dirname "$0")/.."
PY312=${PY312:-python3.12}
mkdir -p .whl
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
for spec in papermill==2.7.0 nbclient==0.11.0 nbformat==5.11.1 ipykernel==7.4.0 jupyter-client==8.10.0 \
  jupyter-core==5.9.1 pyzmq==27.3.0 tornado==6.6.1 traitlets==5.16.1 ipython==9.18.1 ipython-pygments-lexers==1.1.1 \
  comm==0.2.3 debugpy==1.8.22 matplotlib-inline==0.2.2 nest-asyncio2==1.7.4 prompt_toolkit==3.0.53 jedi==0.20.1 \
  parso==0.8.7 pexpect==4.9.0 ptyprocess==0.7.0 stack_data==0.6.3 executing==2.3.0 asttokens==3.0.2 pure-eval==0.2.4 \
  wcwidth==0.9.4 entrypoints==0.4.2 tenacity==9.2.1 fastjsonschema==2.22.3 jsonschema==4.26.0 \
  jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 platformdirs==4.14.8 attrs==26.1.0 \
  pykeen==1.11.1 class_resolver==0.8.2 docdata==0.0.5 pystow==0.10.3 more_click==0.1.3 click_default_group==1.2.4 \
  torch_max_mem==0.1.6 torch-ppr==0.0.8 dataclasses-json==0.6.7 marshmallow==3.26.2 more_itertools==11.2.1 \
  recbole==1.2.1 colorlog==4.7.2 texttable==1.7.2 thop==0.1.1.post2209072238 open_clip_torch==3.3.0 ftfy==6.3.1 \
  gym_notices==0.1.0 pytrec-eval-terrier==0.5.11 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" -d .whl "$spec"
done
python3 -m pip wheel -q --no-deps gym==0.26.2 -w .whl
# learn2learn 0.2.0: regenerate its C with Cython 3 and build a cp312 wheel (as tools/install_env.sh does for 3.11).
tmp=$(mktemp -d)
"$PY312" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q setuptools==80.10.2 cython==3.3.1 wheel
python3 -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$tmp" learn2learn==0.2.0
tar -xzf "$tmp"/learn2learn-0.2.0.tar.gz -C "$tmp"
for f in meta_dataset task_dataset transforms; do "$tmp/venv/bin/cython" -3 "$tmp/learn2learn-0.2.0/learn2learn/data/$f.pyx"; done
"$tmp/venv/bin/python" -m pip wheel -q --no-deps --no-build-isolation "$tmp/learn2learn-0.2.0" -w .whl
rm -rf "$tmp"
du -sh .whl
