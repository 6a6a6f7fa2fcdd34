"""The video pipeline's parts, one job each: ``decode`` (container sniffing, decoder thread, sampling),
``regions`` (where each frame is searched), ``timeline`` (smoothing, segments, summaries, windows: pure),
``tracks`` (per-track timelines) and ``clips`` (clip-model windows). ``service.pipelines.video`` runs them."""
