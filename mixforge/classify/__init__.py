"""Classification (issue #5): fastText quality/domain classifiers and embedding clusters.

- `config`: pydantic models (`ClassifyConfig`, `ClassifierSpec`, `EmbeddingClustersConfig`,
  `TrainClassifierConfig`, `FastTextParams`, `PreprocessConfig`).
- `preprocess`: the one text preparation shared by training and inference.
- `train`: labelled document sets -> fastText model -> versioned model + card.
- `store`: `<root>/models/<name>/vNNNN/` versions (create-only claims and cards).
- `embed`, `clusters`: sentence embeddings, k-means fitted on a sample, top terms.
- `report`: score histograms per source, label/cluster distributions, PNG plots, markdown.

The stage itself is `mixforge.stages.classify.ClassifyStage`.
"""
