"""One file per layer, each a pair of pure functions: `X_forward` returns (output, cache) and
`X_backward` takes the upstream gradient and that cache and returns the input gradient (and the
parameter gradients). The forward and backward formulas are in each module's docstring."""
from .activations import (ACTIVATIONS, feed_forward, gelu_backward, gelu_forward,
                          linear_act_backward, linear_act_forward, tanh_backward, tanh_forward)
from .attention import attention_backward, attention_forward, padding_mask_bias
from .dropout import dropout_backward, dropout_forward
from .embeddings import embedding_backward, embedding_forward, embeddings_layernorm_forward
from .layernorm import add_layernorm_forward, layernorm_backward, layernorm_forward
from .linear import linear_backward, linear_forward
from .losses import (IGNORE_INDEX, bce_with_logits_backward, bce_with_logits_forward,
                     cross_entropy_backward, cross_entropy_forward, mse_backward, mse_forward,
                     soft_cross_entropy_backward, soft_cross_entropy_forward)
