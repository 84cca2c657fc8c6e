#!/usr/bin/python3
"""Baseline for bench_pairwise: the same pairwise links trained one at a time in PyTorch.

Reads the data file written by bench_pairwise (JSON: models with format/task and outputs),
trains every ordered pair's link with the same architecture and protocol as mlink (RMSprop
lr 0.01, batch 32, fixed epochs, 20% validation split, same split), and prints one JSON line:
{"seconds": ..., "mean_val_loss": ..., "links": ...}. Run with Debian's python3 (python3-torch).
"""
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PAD, BOS, EOS = 0, 1, 2


class Mlp(nn.Module):
    def __init__(self, din, hidden, dout):
        super().__init__()
        self.l1, self.l2 = nn.Linear(din, hidden), nn.Linear(hidden, dout)

    def forward(self, x):
        return self.l2(F.relu(self.l1(x)))


class SeqEncoder(nn.Module):
    def __init__(self, vocab, embed, hidden):
        super().__init__()
        self.emb = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)

    def forward(self, tokens, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(self.emb(tokens), lengths, batch_first=True, enforce_sorted=False)
        out, (h, c) = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=tokens.size(1))
        return out, h[0], c[0]


class Decoder(nn.Module):
    def __init__(self, vocab, embed, hidden):
        super().__init__()
        self.emb = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.wch, self.wcc = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden, bias=False)
        self.out = nn.Linear(hidden, vocab)
        bias = torch.full((vocab,), -1e9)
        bias[EOS:] = 0
        self.register_buffer("vocab_bias", bias)

    def forward(self, dec_in, h, c, mem, mem_mask):
        out, _ = self.lstm(self.emb(dec_in), (h.unsqueeze(0), c.unsqueeze(0)))
        scores = torch.bmm(out, mem.transpose(1, 2)).masked_fill(~mem_mask.unsqueeze(1), -1e9)
        ctx = torch.bmm(torch.softmax(scores, -1), mem)
        return self.out(torch.tanh(self.wch(out) + self.wcc(ctx))) + self.vocab_bias


class Link(nn.Module):
    def __init__(self, src, tgt, embed=32, lstm=64):
        super().__init__()
        self.src_seq, self.tgt_seq = src["kind"] == "sequence", tgt["kind"] == "sequence"
        hidden = 2 * (tgt["max_len"] + 1 if self.tgt_seq else tgt["dim"])
        if self.src_seq:
            self.enc = SeqEncoder(src["vocab"], embed, lstm)
        if self.tgt_seq:
            if not self.src_seq:
                self.enc_mlp = Mlp(src["dim"], hidden, lstm)
            self.dec = Decoder(tgt["vocab"], embed, lstm)
        else:
            self.head = Mlp(lstm if self.src_seq else src["dim"], hidden, tgt["dim"])

    def forward(self, x, y):
        if self.src_seq:
            tokens, lengths, mask = x
            mem, h, c = self.enc(tokens, lengths)
            if not self.tgt_seq:
                return self.head(h)
        else:
            if not self.tgt_seq:
                return self.head(x)
            h = torch.tanh(self.enc_mlp(x))
            c = torch.zeros_like(h)
            mem, mask = h.unsqueeze(1), torch.ones(h.size(0), 1, dtype=torch.bool)
        dec_in = torch.cat([torch.full((y.size(0), 1), BOS, dtype=torch.long), y[:, :-1]], 1)
        return self.dec(dec_in, h, c, mem, mask)


def loss_fn(task, z, y):
    if task == "single_label":
        return -(y * torch.log_softmax(z, -1)).sum(-1).mean()
    if task == "multi_label":
        return F.binary_cross_entropy_with_logits(z, y)
    if task == "sequence":
        nll = -torch.log_softmax(z, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
        m = (y != PAD).float()
        return (nll * m).sum() / m.sum().clamp_min(1)
    return ((z - y) ** 2).mean()


def pack_source(fmt, col):
    if fmt["kind"] == "vector":
        return torch.tensor(col, dtype=torch.float32)
    T = fmt["max_len"] + 1
    tokens = torch.zeros(len(col), T, dtype=torch.long)
    lengths = torch.zeros(len(col), dtype=torch.long)
    for r, s in enumerate(col):
        s = list(s)[: T - 1] + [EOS]
        tokens[r, : len(s)] = torch.tensor(s)
        lengths[r] = len(s)
    mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    return tokens, lengths, mask


def pack_target(fmt, col):
    if fmt["kind"] == "vector":
        return torch.tensor(col, dtype=torch.float32)
    T = fmt["max_len"] + 1
    tokens = torch.zeros(len(col), T, dtype=torch.long)
    for r, s in enumerate(col):
        s = list(s) + [EOS]
        tokens[r, : len(s)] = torch.tensor(s)
    return tokens


def rows(x, idx):
    return tuple(t[idx] for t in x) if isinstance(x, tuple) else x[idx]


def main():
    data = json.load(open(sys.argv[1]))
    torch.set_num_threads(int(data.get("threads", 1)))
    torch.manual_seed(data["seed"])
    models, val_idx, train_idx = data["models"], torch.tensor(data["val"]), data["train"]
    epochs, bs = data["epochs"], 32
    total, losses = 0.0, []
    for i, mi in enumerate(models):
        for j, mj in enumerate(models):
            if i == j:
                continue
            x, y = pack_source(mi["format"], mi["outputs"]), pack_target(mj["format"], mj["outputs"])
            link = Link(mi["format"], mj["format"])
            opt = torch.optim.RMSprop(link.parameters(), lr=0.01)
            gen = torch.Generator().manual_seed(data["seed"] + 31 * i + j)
            yv, xv = y[val_idx], rows(x, val_idx)
            best = float("inf")
            start = time.perf_counter()
            for _ in range(epochs):
                perm = torch.tensor(train_idx)[torch.randperm(len(train_idx), generator=gen)]
                for s in range(0, len(perm), bs):
                    idx = perm[s : s + bs]
                    yb = y[idx]
                    loss = loss_fn(mj["task"], link(rows(x, idx), yb), yb)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                with torch.no_grad():  # validation every epoch, best kept, as mlink's trainer does
                    best = min(best, float(loss_fn(mj["task"], link(xv, yv), yv)))
            total += time.perf_counter() - start
            losses.append(best)
    print(json.dumps({"seconds": total, "mean_val_loss": sum(losses) / len(losses), "links": len(losses),
                      "val_losses": losses}))


if __name__ == "__main__":
    main()
