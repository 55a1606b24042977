"""The paper's Figure 1: ResNet, DenseNet and FractalNet blocks as memory-bank architectures compute
the same function as hand-written blocks with the same weights."""

import torch
import torch.nn.functional as F

from smash_engine.blocks import densenet_block, fractalnet_block, resnet_block
from smash_engine.network import FixedNet


def _net(arch):
    torch.manual_seed(0)
    return FixedNet(arch, norm="none").eval()


def _head(net, x):
    return net.fc(F.relu(net.head_bn(x)).mean((2, 3)))


def _layer(net, j, x):
    """One op by hand: 1x1, ReLU, conv0 (and conv0 -> ReLU -> conv1 when active)."""
    m = net.ops[j]
    y = F.relu(F.conv2d(x, m.conv1x1.weight))
    y = F.conv2d(y, m.convs["0"].weight, padding=1)
    if "1" in m.convs:
        y = F.conv2d(F.relu(y), m.convs["1"].weight, padding=1)
    return y


def _randomize_bn(net):
    with torch.no_grad():
        for bn in [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]:
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)


def test_resnet_block():
    net = _net(resnet_block(channels=16, layers=3))
    _randomize_bn(net)
    img = torch.randn(4, 1, 8, 8)
    x = net.stem(img)
    for j in range(3):
        x = x + _layer(net, j, x)  # the residual: read the bank, add back into it
    torch.testing.assert_close(net(img), _head(net, x), rtol=1e-5, atol=1e-5)


def test_densenet_block():
    net = _net(densenet_block(growth=4, in_banks=2, layers=3))
    _randomize_bn(net)
    img = torch.randn(4, 1, 8, 8)
    x = net.stem(img)
    for j in range(3):
        x = torch.cat([x, _layer(net, j, x)], 1)  # every layer sees all earlier features
    torch.testing.assert_close(net(img), _head(net, x), rtol=1e-5, atol=1e-5)


def test_fractalnet_block():
    net = _net(fractalnet_block(channels=8))
    _randomize_bn(net)
    img = torch.randn(4, 1, 8, 8)
    x = net.stem(img)
    short = _layer(net, 0, x)  # column 1: one layer
    mid = _layer(net, 1, x)  # column 2: two layers
    join = short + _layer(net, 2, mid)
    torch.testing.assert_close(net(img), _head(net, torch.cat([x, join, mid], 1)), rtol=1e-5, atol=1e-5)
