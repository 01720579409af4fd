"""A small numpy neural-network library with hand-written backward passes.

It is the worked example for ``pytest-gradcheck``: every layer follows the
protocol described in :mod:`example_nn.layers`, which is what the plugin
checks. The training script lives in :mod:`example_nn.train` and is not
imported here, so that ``python -m example_nn.train`` runs cleanly.
"""

from .data import make_spirals
from .layers import (
    BatchNorm1d,
    Conv2d,
    Dropout,
    Flatten,
    Layer,
    LayerNorm,
    LeakyReLU,
    Linear,
    MaxPool2d,
    Module,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
    col2im,
    im2col,
    iter_layers,
)
from .losses import mse, softmax_cross_entropy
from .models import CaptioningRNN, FullyConnectedNet, ThreeLayerConvNet
from .optim import SGD
from .recurrent import LSTMCell

__all__ = [
    "SGD",
    "BatchNorm1d",
    "CaptioningRNN",
    "Conv2d",
    "Dropout",
    "Flatten",
    "FullyConnectedNet",
    "LSTMCell",
    "Layer",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "MaxPool2d",
    "Module",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "ThreeLayerConvNet",
    "col2im",
    "im2col",
    "iter_layers",
    "make_spirals",
    "mse",
    "softmax_cross_entropy",
]
