"""ResNet, DenseNet and FractalNet blocks as memory-bank architectures (the paper's Figure 1).

Each constructor returns a one-block `Architecture`; `FixedNet` runs it. tests/engine/test_blocks.py checks
each against a hand-written reference block with the same weights.

- ResNet: one bank; every op reads it and adds its output back (x <- x + f(x)).
- DenseNet: banks of the growth rate; op j reads every bank written so far and fills a new one, so the
  block output is the concatenation of the input and every layer's output.
- FractalNet (two columns): bank 0 holds x; op A writes f_A(x) to bank 1, op B writes f_B(x) to bank 2,
  op C reads bank 2 and adds f_C(f_B(x)) to bank 1: bank 1 is the join of the two columns (a sum, where
  FractalNet averages: the scale is absorbed by the next layer's weights).
"""

from __future__ import annotations

from .space import Architecture, Block, Conv, Op

_NONE = (None, None, None)


def _arch(block: Block, image_channels: int, image_size: int, num_classes: int) -> Architecture:
    return Architecture(image_channels, image_size, num_classes, 3, (block,))


def resnet_block(channels: int = 16, layers: int = 2, bottleneck: int = 16, kernel: int = 3,
                 image_channels: int = 1, image_size: int = 8, num_classes: int = 10) -> Architecture:
    """Bottleneck residual layers: x <- x + conv_k(relu(conv_k(relu(conv1x1(x)))))."""
    conv = Conv((kernel, kernel), (1, 1), 1)
    op = Op((0,), (0,), channels, bottleneck, (conv, conv, None, None))
    block = Block(channels, channels, 1, (op,) * layers, channels)
    return _arch(block, image_channels, image_size, num_classes)


def densenet_block(growth: int = 4, in_banks: int = 2, layers: int = 3, kernel: int = 3,
                   image_channels: int = 1, image_size: int = 8, num_classes: int = 10) -> Architecture:
    """DenseNet-BC layers: x <- cat(x, conv_k(relu(conv1x1(x)))), 1x1 to 4x the growth rate."""
    conv = Conv((kernel, kernel), (1, 1), 1)
    ops = tuple(Op(tuple(range(in_banks + j)), (in_banks + j,), growth, 4 * growth, (conv, *_NONE))
                for j in range(layers))
    block = Block(in_banks * growth, growth, in_banks + layers, ops, (in_banks + layers) * growth)
    return _arch(block, image_channels, image_size, num_classes)


def fractalnet_block(channels: int = 8, kernel: int = 3, image_channels: int = 1, image_size: int = 8,
                     num_classes: int = 10) -> Architecture:
    """A two-column fractal: join(f_A(x), f_C(f_B(x))), with x and f_B(x) kept in their own banks."""
    conv = Conv((kernel, kernel), (1, 1), 1)
    ops = (Op((0,), (1,), channels, channels, (conv, *_NONE)),
           Op((0,), (2,), channels, channels, (conv, *_NONE)),
           Op((2,), (1,), channels, channels, (conv, *_NONE)))
    block = Block(channels, channels, 3, ops, 3 * channels)
    return _arch(block, image_channels, image_size, num_classes)


NAMED_BLOCKS = {"resnet": resnet_block, "densenet": densenet_block, "fractalnet": fractalnet_block}
