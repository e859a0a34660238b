#!/bin/sh
# Entrypoint of the seti-auditor worker image: `dask worker ARGS...`.
#
#   docker run seti-auditor-worker tcp://scheduler:8786 --nthreads 8 --resources GPU=4
#
# Arguments that already name a command run as given, because the Dask Helm chart passes
# `dask-worker ADDRESS ...` / `dask-scheduler ...` and the Dask Kubernetes operator passes
# `dask worker ...` / `dask scheduler ...` as the container's arguments (one image then
# serves the scheduler and the workers, with the same Dask and Python versions).
set -e
case "${1:-}" in
  dask-worker) shift; exec dask worker "$@" ;;
  dask-scheduler) shift; exec dask scheduler "$@" ;;
  dask|python|python3|seti-auditor|prefect|sh|bash) exec "$@" ;;
  *) exec dask worker "$@" ;;
esac
