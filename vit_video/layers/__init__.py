"""Layers: attention, positional encodings, embeddings, windows, shared CNN pieces. They know no model.

Read in the lecture's order: `scores` (alignment scores, softmax weights, weighted sums) ->
`attention` (multi-head scaled dot-product attention) -> `feature_attention` (self-attention over CNN feature
maps) -> `encodings` (sinusoidal and Fourier position encodings) -> `embed` (patches, class token, learned
position embeddings) -> `mlp` (MLP block, stochastic depth) -> `windows` ((shifted) window partitions, masks and
relative-position biases of Swin and Video Swin) -> `conv` (CNN initialisers, torch-padded convs, BatchNorm,
weight-standardised convs) -> `stems` (BiT's root, the ViT hybrids' ResNet trunk).
"""
from vit_video.layers.attention import (MultiHeadAttention, attention_weights_from_logits, dot_product_attention,
                                        make_causal_mask, make_padding_mask)
from vit_video.layers.conv import CONV_INIT, FC_INIT, RELU_INIT, StdConv, batch_norm, standardize, torch_conv
from vit_video.layers.embed import AddPositionEmbedding, ClassToken, PatchEmbedding, resample_pos_embedding
from vit_video.layers.encodings import (GaussianFourierFeatures, basic_fourier_features, positional_fourier_features,
                                        sinusoidal_1d, sinusoidal_2d, sinusoidal_3d)
from vit_video.layers.feature_attention import FeatureSelfAttention
from vit_video.layers.mlp import DropPath, MlpBlock, drop_path
from vit_video.layers.scores import (AdditiveScores, AttentionPool, BilinearScores, attention_weights, dot_scores,
                                     weighted_sum)
from vit_video.layers.stems import BiTRoot, ResNetStem
from vit_video.layers.windows import (RelativePositionBias, attention_mask, cyclic_shift, padded_size,
                                      relative_position_index, resize_relative_position_bias_table,
                                      reverse_cyclic_shift, window_and_shift, window_partition, window_reverse)
