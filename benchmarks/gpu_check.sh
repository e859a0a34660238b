#!/usr/bin/env bash
# VAE checks on a GPU machine; run from the repository root:
#
#     bash benchmarks/gpu_check.sh            # install, tests, benchmarks
#     SKIP_INSTALL=1 bash benchmarks/gpu_check.sh   # the environment is already set up
#
# 1. installs the project with the gpu extra (jax[cuda12]) and the dev tools,
# 2. checks that JAX sees a GPU,
# 3. runs the VAE tests (the two-device test still uses fake CPU devices),
# 4. runs benchmarks/vae.py for both presets (float32, then bfloat16 compute), with the plain
#    lax reference beside each, and prints the JSON lines (also saved under $OUT, or ./gpu_check_out).
# Sized to finish in a few minutes on one H100/H200 (steps and reference steps kept small).
set -uo pipefail

OUT_DIR="${OUT:-gpu_check_out}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
status=0

if [ "${SKIP_INSTALL:-0}" != "1" ]; then
  echo "== install (.[gpu,dev])"
  if ! "$PY" -m pip install -q -e ".[gpu,dev]"; then
    echo "!! install with the gpu extra failed; falling back to the installed jax" >&2
    "$PY" -m pip install -q --no-deps -e . || true
  fi
fi

echo "== devices"
"$PY" - <<'EOF' || exit 2
import jax
print(jax.__version__, jax.default_backend(), jax.devices())
if jax.default_backend() != "gpu":
    raise SystemExit("no GPU visible to JAX: check the CUDA install (pip install -e '.[gpu]')")
for d in jax.local_devices():
    print(d, d.device_kind, (d.memory_stats() or {}).get("bytes_limit"))
EOF

echo "== tests"
"$PY" -m pytest -q tests/test_vae_model.py tests/test_vae_train.py tests/test_vae_data.py tests/test_vae_parallel.py \
  2>&1 | tee "$OUT_DIR/tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== benchmarks"
for args in "--preset article --tile 64x64" "--preset default --tile 16x256" \
            "--preset article --tile 64x64 --bf16" "--preset default --tile 16x256 --bf16"; do
  name=$(echo "$args" | tr -d ' -' | tr 'x' '_')
  echo "-- benchmarks/vae.py $args"
  # shellcheck disable=SC2086
  if ! "$PY" benchmarks/vae.py $args --json --steps 20 --ref-steps 5 --score-reps 10 \
      > "$OUT_DIR/bench_$name.json" 2> "$OUT_DIR/bench_$name.err"; then
    status=1
    tail -20 "$OUT_DIR/bench_$name.err"
  fi
  cat "$OUT_DIR/bench_$name.json"
done

echo "== summary"
"$PY" - "$OUT_DIR" <<'EOF'
import glob, json, sys
for path in sorted(glob.glob(f"{sys.argv[1]}/bench_*.json")):
    try:
        d = json.loads(open(path).read().strip().splitlines()[-1])
    except Exception as e:  # a failed run
        print(path, "no result:", e)
        continue
    ref = d.get("reference", {})
    print(f"{d['preset']:8s} {'x'.join(map(str, d['tile'])):7s} {d['compute_dtype']:9s} "
          f"train {d['train_tiles_per_s']:10.0f}/s  score {d['score_tiles_per_s']:10.0f}/s  "
          f"compile {d['compile_s']:5.1f}s  peak {d['peak_device_mb'] or 0:8.0f} MiB  "
          f"| plain lax: train {ref.get('train_tiles_per_s', float('nan')):8.0f}/s "
          f"score {ref.get('score_tiles_per_s', float('nan')):8.0f}/s")
EOF
exit $status
