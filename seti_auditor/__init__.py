"""seti-auditor: the pure data layer and archive I/O.

Layers (imports only point downwards):

* pure compute: :mod:`seti_auditor.tiling`, :mod:`seti_auditor.synth`,
  :mod:`seti_auditor.cadence` and the :mod:`vae` package (numpy / xarray / jax,
  no paths, no Prefect);
* I/O: :mod:`seti_auditor.formats` (filterbank and BL HDF5 readers/writers),
  :mod:`seti_auditor.tilestore`, :mod:`seti_auditor.archive` (synthetic archive on disk);
* orchestration: the ``tasks`` and ``flows`` packages (Prefect), ``infra`` (cluster factories).
"""

__version__ = "0.1.0"
