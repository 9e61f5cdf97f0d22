"""PyTorch reference on the same GPU: ResNet-20 (option-A shortcuts), CIFAR shapes,
SGD momentum 0.9, wd 5e-4, eager, channels-last, cudnn.benchmark; f32 and
autocast f16 with a GradScaler; median train and inference images/s."""
import sys, time, statistics
import torch, torch.nn as nn, torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.pad = cout - cin
        self.stride = stride

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        s = x
        if self.stride != 1 or self.pad:
            s = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad // 2, self.pad // 2))
        return F.relu(y + s)


def resnet20():
    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for cout, stride in [(16, 1), (32, 2), (64, 2)]:
        for i in range(3):
            layers.append(Block(cin, cout, stride if i == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


def bench(batch, amp, steps=30):
    """Eager PyTorch, channels-last, cudnn.benchmark; with `amp`, autocast
    f16 and a GradScaler (PyTorch's mixed precision)."""
    dev = "cuda"
    m = resnet20().to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x = torch.randn(batch, 3, 32, 32, device=dev).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss = F.cross_entropy(m(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss.item()

    for _ in range(5):
        step()
    t = []
    for _ in range(steps):
        s = time.perf_counter(); step(); t.append(time.perf_counter() - s)
    train = batch / statistics.median(t)
    m.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
        for _ in range(5):
            m(x).argmax(1).sum().item()
        t = []
        for _ in range(steps):
            s = time.perf_counter(); m(x).argmax(1).sum().item(); t.append(time.perf_counter() - s)
    infer = batch / statistics.median(t)
    kind = "amp-f16" if amp else "f32"
    print(f"pytorch {torch.__version__} resnet20 batch {batch} {kind} channels-last: "
          f"train {train:.0f} img/s, inference {infer:.0f} img/s")


torch.backends.cudnn.benchmark = True
for b in [int(a) for a in sys.argv[1:]] or [64, 256]:
    for amp in [False, True]:
        bench(b, amp)
