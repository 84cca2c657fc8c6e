#!/usr/bin/python3
"""Baseline for bench_pairwise: the same pairwise links trained one at a time in PyTorch.

Reads the data file written by bench_pairwise (JSON: models with format/task and outputs),
trains every ordered pair's link with the same architecture and protocol as mlink (RMSprop
lr 0.01, batch 32, fixed epochs, 20% validation split, same split), and prints one JSON line:
{"seconds": ..., "cpu_seconds": ..., "mean_val_loss": ..., "links": ...} (wall and process CPU time
of the training loops). Run with Debian's python3 (python3-torch).
When the data file carries them, every link starts from mlink's initial parameters ("init", one
entry per pair in loop order) and sees mlink's mini-batch order ("epoch_orders"), so the two
should agree up to float rounding. mlink's LSTMs have one bias vector; nn.LSTM's second one
(bias_hh) is held at zero so that the networks are the same.
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


def single_bias_lstm(embed, hidden):
    lstm = nn.LSTM(embed, hidden, batch_first=True)
    with torch.no_grad():
        lstm.bias_hh_l0.zero_()
    lstm.bias_hh_l0.requires_grad_(False)
    return lstm


class SeqEncoder(nn.Module):
    def __init__(self, vocab, embed, hidden):
        super().__init__()
        self.emb = nn.Embedding(vocab, embed)
        self.lstm = single_bias_lstm(embed, hidden)

    def forward(self, tokens, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(self.emb(tokens), lengths, batch_first=True, enforce_sorted=False)
        out, (h, c) = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=tokens.size(1))
        return out, h[0], c[0]


class Decoder(nn.Module):
    def __init__(self, vocab, embed, hidden):
        super().__init__()
        self.emb = nn.Embedding(vocab, embed)
        self.lstm = single_bias_lstm(embed, hidden)
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
        hidden = max(8, 2 * (tgt["max_len"] + 1 if self.tgt_seq else tgt["dim"]))  # as LinkSpec::HiddenUnits
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


def load_init(link, init):
    """Copies mlink's parameters (its names, [in, out] matrices, [in, 4, H] LSTM weights)."""
    def t(name):
        return torch.tensor(init[name]["values"], dtype=torch.float32).reshape(init[name]["shape"])

    def mlp(m, prefix):
        m.l1.weight.copy_(t(prefix + "w1").t())
        m.l1.bias.copy_(t(prefix + "b1").reshape(-1))
        m.l2.weight.copy_(t(prefix + "w2").t())
        m.l2.bias.copy_(t(prefix + "b2").reshape(-1))

    def lstm(emb, cell, prefix):
        emb.weight.copy_(t(prefix + "embed"))
        wx, wh = t(prefix + "wx"), t(prefix + "wh")
        cell.weight_ih_l0.copy_(wx.reshape(wx.size(0), -1).t())
        cell.weight_hh_l0.copy_(wh.reshape(wh.size(0), -1).t())
        cell.bias_ih_l0.copy_(t(prefix + "b").reshape(-1))
        cell.bias_hh_l0.zero_()

    with torch.no_grad():
        if link.src_seq:
            lstm(link.enc.emb, link.enc.lstm, "enc_")
        if link.tgt_seq:
            if not link.src_seq:
                mlp(link.enc_mlp, "enc_")
            d = link.dec
            lstm(d.emb, d.lstm, "dec_")
            d.wch.weight.copy_(t("dec_wch").t())
            d.wch.bias.copy_(t("dec_bc").reshape(-1))
            d.wcc.weight.copy_(t("dec_wcc").t())
            d.out.weight.copy_(t("dec_wo").t())
            d.out.bias.copy_(t("dec_bo").reshape(-1))
        else:
            mlp(link.head, "mlp_")


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
    inits, orders = data.get("init"), data.get("epoch_orders")
    orders = [torch.tensor(o) for o in orders] if orders else None
    total, total_cpu, losses = 0.0, 0.0, []
    for i, mi in enumerate(models):
        for j, mj in enumerate(models):
            if i == j:
                continue
            x, y = pack_source(mi["format"], mi["outputs"]), pack_target(mj["format"], mj["outputs"])
            link = Link(mi["format"], mj["format"], data.get("embed_dim", 32), data.get("lstm_hidden", 64))
            if inits:
                load_init(link, inits[len(losses)])
            opt = torch.optim.RMSprop([p for p in link.parameters() if p.requires_grad], lr=0.01)
            gen = torch.Generator().manual_seed(data["seed"] + 31 * i + j)
            yv, xv = y[val_idx], rows(x, val_idx)
            best = float("inf")
            start, start_cpu = time.perf_counter(), time.process_time()
            for epoch in range(epochs):
                if orders:
                    perm = orders[epoch]
                else:
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
            total_cpu += time.process_time() - start_cpu
            losses.append(best)
    print(json.dumps({"seconds": total, "cpu_seconds": total_cpu, "mean_val_loss": sum(losses) / len(losses), "links": len(losses),
                      "val_losses": losses}))


if __name__ == "__main__":
    main()
