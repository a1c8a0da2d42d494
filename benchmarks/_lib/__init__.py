"""What the benchmark entries share, one module a responsibility.

- :mod:`.data`: the settings and the Fashion-MNIST rows of a run.
- :mod:`.tasks`: the image tasks of ``benchmarks.stages`` (Fashion-MNIST,
  digits, ELPV) with their train and test splits.
- :mod:`.models`: the baselines' preprocessing and pretrained Lite0.
- :mod:`.measure`: clocks, memory and the accuracy-recording callback.
- :mod:`.worker`: a function run in a fresh Python process.
- :mod:`.results`: where a run's JSON and markdown go.
- :mod:`.tables`: plain-text and markdown tables.
- :mod:`.methods`: the transfer benchmark's methods and their settings.
- :mod:`.runners`: how each method is fitted and measured (in its process).
- :mod:`.fastai`: the fastai-style baseline in plain torch.
- :mod:`.snapshot`: one copy of the code for every method of a run.
- :mod:`.gram`: the head solve's arithmetic on synthetic features (P4).
- :mod:`.targets`: the targets P1-P6 from a run's records.
- :mod:`.transfer_report`: the transfer benchmark's tables and plot.
- :mod:`.levers_measures` and :mod:`.levers_tables`: the speed levers'
  measurements and their tables.

Only the public API of skfastretrain is used.
"""
