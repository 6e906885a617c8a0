"""Studies: the experiments' drivers and reports, built on the library (a study knows the library; the library
knows no study). Each study module has `run(config, workdir, *, command, notes) -> rows`, `summary_table(config,
rows)` and `REPORT` (the report files it writes into the workdir); `python -m vit_video.study --config=...` runs
the one its config names in `config.study`:

  vit_vs_resnet         the ViT paper's compute-scaling comparison (Figure 5) in miniature: pre-training, transfer
                        by fine-tuning and few-shot linear probes (`fewshot`), results.csv/.md and figure5.png
                        (`vit_vs_resnet_report`)
  video_comparison      video models x labels on one recipe: results.csv/.md (the classic video classifiers and
                        the video transformers)
  fourier_features      coordinate MLPs regressing photographs with each Fourier-feature mapping (Tancik et al.
                        2020): PSNR beside the paper's, results.csv/.md and reconstructions.png
  vqa                   VQA on easy-VQA: stacked attention networks against question-only and image-only
                        baselines, accuracy per question type, results.csv/.md and attention.png
"""
