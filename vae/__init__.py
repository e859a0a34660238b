"""The VAE auditor: a convolutional VAE that learns noise + man-made RFI (JAX / Flax NNX).

Modules (pure compute unless marked I/O; importing this package imports none of them):

* :mod:`vae.config` - ``VAEConfig``, ``TrainConfig`` (frozen dataclasses), ``preset(name, tile)``
  with the ``"article"`` blueprint and the lean ``"default"``;
* :mod:`vae.model` - ``VAE`` (nnx.Module), ``build``, ``transform_input``, ``reconstruct``,
  ``mse_score``, ``loss_terms``, ``model_version``;
* :mod:`vae.ops` - convolutions that train fast on CPUs (transposed convolutions as matmul +
  col2im), exactly equal to ``lax``;
* :mod:`vae.train` - the pure ``train_step`` and ``fit`` (epochs, data parallelism, checkpoints);
* :mod:`vae.parallel` - ``make_mesh`` (a ``data`` axis over the local devices);
* :mod:`vae.batches` - batch plans, ``ArrayBatches``; :mod:`vae.calibrate` - ``calibrate``,
  ``calibrate_scores``, ``Calibration``;
* I/O: :mod:`vae.data` - ``select_training_tiles``, ``TileSelection``, ``ZarrBatches`` (zarr);
  :mod:`vae.checkpoint` - ``save_model``, ``load_model`` and training checkpoints (orbax).

Typical use (what a flow does)::

    train_sel, hold_sel = vae.data.select_training_tiles(store, known_signals=[(1420.0, 1420.8)])
    cfg = vae.config.preset("default", tile=(16, 256))
    tcfg = vae.config.TrainConfig(batch_size=128, epochs=10)
    res = vae.train.fit(vae.data.ZarrBatches(store, train_sel, tcfg.batch_size, shuffle_seed=tcfg.seed),
                        cfg, tcfg, checkpoint_dir=work / "vae_ckpt")
    cal = vae.calibrate.calibrate(res.model, cfg,
                                  vae.data.ZarrBatches(store, hold_sel, 1024, shuffle_seed=None,
                                                       drop_remainder=False))
    version = vae.checkpoint.save_model(work / "model", res.model, cfg, selection=train_sel,
                                        calibration=cal, extra={"store": store})
"""
