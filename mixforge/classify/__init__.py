"""Classification: fastText quality/domain classifiers, embedding clusters, and any classifier kind registered.

- `config`: pydantic models (`ClassifyConfig`, `ClassifierSpec`, `EmbeddingClustersConfig`,
  `TrainClassifierConfig`, `FastTextParams`, `PreprocessConfig`).
- `preprocess`: the one text preparation shared by training and inference.
- `train`: labelled document sets -> fastText model -> versioned model + card.
- `store`: `<root>/models/<name>/vNNNN/` versions (create-only claims and cards).
- `embed`, `clusters`: sentence embeddings, k-means fitted on a sample, top terms.
- `classifiers`: the `Classifier` protocol (a kind is one class: columns, card check, setup, scoring)
  and its registry; the two fastText kinds and embedding clusters.
- `report`: score histograms per source, label/cluster distributions, PNG plots, markdown.
- `composite`: fit clusters -> apply -> report over an injected executor (`run_classify`).

The stage itself is `mixforge.stages.classify.ClassifyStage`.
"""
