"""Layers: attention, positional encodings, embeddings. They know no model.

Read in the lecture's order: `scores` (alignment scores, softmax weights, weighted sums) ->
`attention` (multi-head scaled dot-product attention) -> `feature_attention` (self-attention over CNN feature
maps) -> `encodings` (sinusoidal and Fourier position encodings) -> `embed` (patches, class token, learned
position embeddings) -> `mlp` (MLP block, stochastic depth).
"""
from vit_video.layers.attention import (MultiHeadAttention, attention_weights_from_logits, dot_product_attention,
                                        make_causal_mask, make_padding_mask)
from vit_video.layers.embed import AddPositionEmbedding, ClassToken, PatchEmbedding, resample_pos_embedding
from vit_video.layers.encodings import (GaussianFourierFeatures, basic_fourier_features, positional_fourier_features,
                                        sinusoidal_1d, sinusoidal_2d, sinusoidal_3d)
from vit_video.layers.feature_attention import FeatureSelfAttention
from vit_video.layers.mlp import DropPath, MlpBlock, drop_path
from vit_video.layers.scores import (AdditiveScores, AttentionPool, BilinearScores, attention_weights, dot_scores,
                                     weighted_sum)
