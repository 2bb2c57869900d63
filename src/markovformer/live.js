/* markovformer live figures: the package's closed forms, ported to JavaScript.
 *
 * Loaded once per figure output (guarded, so once per page) before the Bokeh documents are
 * embedded; the figures' CustomJS callbacks call MFLive.update[kind](models). Every function
 * here mirrors a Python function named in its comment, and tests/test_live.py checks it against
 * that function (through node), so the page shows what the package computes.
 *
 * Plain ES2017, no dependencies; works in a browser (window.MFLive) and in node (module.exports).
 */
(function (root, factory) {
  "use strict";
  const lib = factory();
  if (typeof module === "object" && module.exports) module.exports = lib;
  if (root && !root.MFLive) root.MFLive = lib;
})(typeof window !== "undefined" ? window : globalThis, function () {
  "use strict";

  const LN2 = Math.LN2;
  const W_SADDLE = -1 / Math.sqrt(2); // canonical.W_SADDLE
  const E_SADDLE = -(1 + Math.log(2)) / 2; // canonical.E_SADDLE

  // ---------------------------------------------------------------- chains (markov.py)

  /** markov.binary_entropy: h(t) in nats, 0 ln 0 = 0. */
  function h(t) {
    const a = t > 0 ? -t * Math.log(t) : 0;
    const b = t < 1 ? -(1 - t) * Math.log(1 - t) : 0;
    return a + b;
  }
  /** markov.binary_entropy_rate (the bigram loss). */
  function entropyRate(p, q) {
    return (q * h(p) + p * h(q)) / (p + q);
  }
  /** markov.binary_unigram_loss (the stationary entropy). */
  function unigramLoss(p, q) {
    return h(p / (p + q));
  }
  /** BinaryChain.regime, with the same tolerance. */
  function regime(p, q) {
    const s = p + q;
    if (Math.abs(s - 1) <= 1e-12) return "iid";
    return s > 1 ? "switching" : "sticky";
  }

  /** markov.binary_chains_from_uniforms for one chain: rebuilds BinaryChain(p, q).sample from
   * the float32 uniforms u0[b] (first symbol) and expo[b * length + k] = -log1p(-u) (run
   * lengths), with torch's float32 arithmetic emulated by Math.fround. Returns Uint8Array rows. */
  function sampleChain(u0, expo, p, q, batch, length) {
    const cp = Math.fround(p === 0 ? Infinity : p === 1 ? 0 : -1 / Math.log1p(-p));
    const cq = Math.fround(q === 0 ? Infinity : q === 1 ? 0 : -1 / Math.log1p(-q));
    const pi1 = Math.fround(p / (p + q));
    const absorbing = p === 0 || q === 0;
    const tiny = Math.fround(1e-30);
    const rows = [];
    for (let b = 0; b < batch; b++) {
      const x0 = u0[b] < pi1 ? 1 : 0;
      const starts = new Uint8Array(length + 1);
      let end = 0;
      for (let k = 0; k < length - 1; k++) {
        const even = k % 2 === 0;
        const c = x0 ? (even ? cq : cp) : even ? cp : cq;
        let ex = expo[b * length + k];
        if (absorbing && ex < tiny) ex = tiny;
        let g = Math.fround(ex * c);
        if (g > length) g = length;
        end += Math.trunc(g) + 1;
        starts[Math.min(end, length)] = 1;
      }
      const row = new Uint8Array(length);
      let run = 0;
      for (let n = 0; n < length; n++) {
        run += starts[n];
        row[n] = x0 ^ (run & 1);
      }
      rows.push(row);
    }
    return rows;
  }

  // ---------------------------------------------------------------- canonical.py

  /** numpy.logaddexp */
  function logaddexp(a, b) {
    if (a === b) return a + LN2;
    const d = a - b;
    if (d > 0) return a + Math.log1p(Math.exp(-d));
    if (d <= 0) return b + Math.log1p(Math.exp(d));
    return d;
  }
  function logSigmoid(z) {
    return -logaddexp(0, -z);
  }
  function sigmoid(z) {
    return Math.exp(logSigmoid(z));
  }
  /** canonical.gap: A(e, w) = e^2 (1 + 2 w|w|). */
  function gap(e, w) {
    return e * e * (1 + 2 * w * Math.abs(w));
  }
  /** canonical.separatrix */
  function separatrix(w) {
    return w < 0 ? w * w - Math.log(Math.abs(w)) + E_SADDLE : NaN;
  }
  /** canonical.basin_label: 1 global basin, 0 unigram basin. */
  function basinLabel(e, w, switching) {
    const phi = separatrix(w);
    const inside = w < 0 && e * e < phi;
    const local = switching ? w >= 0 || (w > W_SADDLE && inside) : w < W_SADDLE && inside;
    return local || e === 0 ? 0 : 1;
  }

  /** canonical.CanonicalLandscape(p, q): closed forms of the canonical model. */
  function Landscape(p, q) {
    if (!(p > 0 && p < 1 && q > 0 && q < 1)) throw new Error(`p, q must lie in (0, 1): ${p}, ${q}`);
    if (regime(p, q) === "iid") throw new Error("p + q = 1: the landscape is flat");
    this.p = p;
    this.q = q;
    this.pi0 = q / (p + q);
    this.pi1 = p / (p + q);
    this.entropyRate = entropyRate(p, q);
    this.unigramLoss = unigramLoss(p, q);
    this.switching = p + q > 1;
    this.aStar = Math.log(((1 - p) * (1 - q)) / (p * q));
  }
  Landscape.prototype.lossGapBias = function (A, bp) {
    const p = this.p, q = this.q;
    const z1 = A + bp;
    const l0 = -(logSigmoid(bp) - (1 - p) * bp);
    const l1 = -(logSigmoid(z1) - q * z1);
    return this.pi0 * l0 + this.pi1 * l1;
  };
  Landscape.prototype.optimalShiftedBias = function (A) {
    const p = this.p, q = this.q;
    const logSqrtD = 0.5 * logaddexp(2 * Math.log(Math.abs(q - p)), Math.log(4 * p * q) + A);
    if (q >= p) return Math.log(2 * p) - logaddexp(Math.log(q - p), logSqrtD);
    return logaddexp(Math.log(p - q), logSqrtD) - Math.log(2 * q) - A;
  };
  Landscape.prototype.profile = function (A) {
    return this.lossGapBias(A, this.optimalShiftedBias(A));
  };
  Landscape.prototype.profileGrad = function (A) {
    return this.pi1 * (sigmoid(A + this.optimalShiftedBias(A)) - (1 - this.q));
  };
  Landscape.prototype.lossAtOptimalBias = function (e, w) {
    return this.profile(gap(e, w));
  };
  Landscape.prototype.loss = function (e, w, b) {
    return this.lossGapBias(gap(e, w), b - (e * e) / 2);
  };
  Landscape.prototype.optimalBias = function (e, w) {
    return (e * e) / 2 + this.optimalShiftedBias(gap(e, w));
  };
  Landscape.prototype.grad = function (e, w) {
    const g = this.profileGrad(gap(e, w));
    return [g * 2 * e * (1 + 2 * w * Math.abs(w)), g * 4 * Math.abs(w) * e * e];
  };
  Landscape.prototype.gradEwb = function (e, w, b) {
    const A = gap(e, w), bp = b - (e * e) / 2;
    const d0 = this.pi0 * (sigmoid(bp) - this.p);
    const d1 = this.pi1 * (sigmoid(A + bp) - (1 - this.q));
    const dAde = 2 * e * (1 + 2 * w * Math.abs(w)), dAdw = 4 * Math.abs(w) * e * e;
    return [d1 * dAde - (d0 + d1) * e, d1 * dAdw, d0 + d1];
  };
  Landscape.prototype.basin = function (e, w) {
    return basinLabel(e, w, this.switching);
  };
  /** CanonicalLandscape.global_minimum_curve: e >= 0 with A(e, w) = A*, NaN where none. */
  Landscape.prototype.globalMinimumCurve = function (w) {
    const e2 = this.aStar / (1 + 2 * w * Math.abs(w));
    return e2 > 0 ? Math.sqrt(e2) : NaN;
  };

  /** canonical.gradient_descent on (e, w, b), b0 = optimal bias; NaN after divergence. */
  function gradientDescent(land, e0, w0, lr, steps) {
    let e = e0, w = w0, b = land.optimalBias(e, w);
    const out = { e: new Float64Array(steps + 1).fill(NaN) };
    out.w = new Float64Array(steps + 1).fill(NaN);
    out.b = new Float64Array(steps + 1).fill(NaN);
    out.loss = new Float64Array(steps + 1).fill(NaN);
    for (let t = 0; t <= steps; t++) {
      const loss = land.loss(e, w, b);
      if (!(Number.isFinite(e) && Number.isFinite(w) && Number.isFinite(b) && Number.isFinite(loss)))
        break;
      out.e[t] = e;
      out.w[t] = w;
      out.b[t] = b;
      out.loss[t] = loss;
      const g = land.gradEwb(e, w, b);
      e -= lr * g[0];
      w -= lr * g[1];
      b -= lr * g[2];
    }
    return out;
  }

  /** canonical.gradient_flow: de/dt, dw/dt = -grad L(e, w), integrated with the Dormand-Prince
   * 5(4) pair (adaptive steps, rtol 1e-9, atol 1e-11 as the package's LSODA), stopped when the
   * speed falls below gradTol or at tMax. label: 1 if it ends at the global minimum. */
  function gradientFlow(land, e0, w0, tMax, gradTol, maxSteps) {
    tMax = tMax === undefined ? 1e4 : tMax;
    gradTol = gradTol === undefined ? 1e-7 : gradTol;
    maxSteps = maxSteps || 200000;
    const rtol = 1e-9, atol = 1e-11;
    const f = (y) => {
      const g = land.grad(y[0], y[1]);
      return [-g[0], -g[1]];
    };
    const C = [0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1];
    const A = [
      [],
      [1 / 5],
      [3 / 40, 9 / 40],
      [44 / 45, -56 / 15, 32 / 9],
      [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
      [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
      [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
    ];
    const E = [71 / 57600, 0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40];
    let t = 0, y = [e0, w0], k1 = f(y);
    const ts = [0], es = [e0], ws = [w0];
    let speed = Math.hypot(k1[0], k1[1]);
    let hStep = Math.min(1e-2, tMax) || 1e-2;
    if (speed > 0) hStep = Math.min(hStep, 0.01 * (Math.hypot(y[0], y[1]) + 1e-3) / speed);
    let n = 0;
    while (t < tMax && speed >= gradTol && n < maxSteps) {
      n++;
      if (t + hStep > tMax) hStep = tMax - t;
      const K = [k1];
      let yNew = null;
      for (let s = 1; s < 7; s++) {
        const ys = [y[0], y[1]];
        for (let j = 0; j < s; j++) {
          ys[0] += hStep * A[s][j] * K[j][0];
          ys[1] += hStep * A[s][j] * K[j][1];
        }
        K.push(f(ys));
        if (s === 6) yNew = ys; // the 5th-order solution; K[6] = f(yNew) is reused (FSAL)
      }
      let err = 0;
      for (let i = 0; i < 2; i++) {
        let ei = 0;
        for (let s = 0; s < 7; s++) ei += E[s] * K[s][i];
        const sc = atol + rtol * Math.max(Math.abs(y[i]), Math.abs(yNew[i]));
        err = Math.max(err, Math.abs(hStep * ei) / sc);
      }
      if (err <= 1 || hStep < 1e-12) {
        t += hStep;
        y = yNew;
        k1 = K[6];
        speed = Math.hypot(k1[0], k1[1]);
        ts.push(t);
        es.push(y[0]);
        ws.push(y[1]);
      }
      const factor = err === 0 ? 5 : Math.min(5, Math.max(0.2, 0.9 * Math.pow(err, -1 / 5)));
      hStep *= factor;
    }
    const loss = es.map((e, i) => land.lossAtOptimalBias(e, ws[i]));
    const label = loss[loss.length - 1] < land.entropyRate + 1e-6 ? 1 : 0;
    return { t: ts, e: es, w: ws, loss: loss, label: label, converged: speed < gradTol };
  }

  // ---------------------------------------------------------------- the transformer (model.py)

  /** MarkovTransformer.forward for one binary sequence x (length N) and one run: embedding plus
   * positions, causal softmax attention, W_O, the ReLU MLP with residuals, the tied output.
   * W holds d, m and row-major Float64Arrays emb (d), pos (N d), wq, wk, wv, wo (d d),
   * w1 (m d), w2 (d m) and the scalar bias. Returns Float64Array logits (N). */
  function transformerLogits(x, W) {
    const N = x.length, d = W.d, m = W.m, sd = Math.sqrt(d);
    const h = new Float64Array(N * d);
    for (let n = 0; n < N; n++)
      for (let j = 0; j < d; j++) h[n * d + j] = x[n] * W.emb[j] + W.pos[n * d + j];
    const lin = (src, M, rows, cols, count) => {
      const out = new Float64Array(count * rows);
      for (let n = 0; n < count; n++)
        for (let i = 0; i < rows; i++) {
          let s = 0;
          for (let j = 0; j < cols; j++) s += M[i * cols + j] * src[n * cols + j];
          out[n * rows + i] = s;
        }
      return out;
    };
    const Q = lin(h, W.wq, d, d, N), Kk = lin(h, W.wk, d, d, N), V = lin(h, W.wv, d, d, N);
    const O = new Float64Array(N * d);
    const sc = new Float64Array(N);
    for (let n = 0; n < N; n++) {
      let mx = -Infinity;
      for (let i = 0; i <= n; i++) {
        let s = 0;
        for (let j = 0; j < d; j++) s += Q[n * d + j] * Kk[i * d + j];
        sc[i] = s / sd;
        if (sc[i] > mx) mx = sc[i];
      }
      let z = 0;
      for (let i = 0; i <= n; i++) {
        sc[i] = Math.exp(sc[i] - mx);
        z += sc[i];
      }
      for (let i = 0; i <= n; i++)
        for (let j = 0; j < d; j++) O[n * d + j] += (sc[i] / z) * V[i * d + j];
    }
    const att = lin(O, W.wo, d, d, N);
    const y = new Float64Array(N * d);
    for (let i = 0; i < N * d; i++) y[i] = h[i] + att[i];
    const hid = lin(y, W.w1, m, d, N);
    for (let i = 0; i < N * m; i++) if (hid[i] < 0) hid[i] = 0;
    const mlp = lin(hid, W.w2, d, m, N);
    const logits = new Float64Array(N);
    for (let n = 0; n < N; n++) {
      let s = W.bias;
      for (let j = 0; j < d; j++) s += (y[n * d + j] + mlp[n * d + j]) * W.emb[j];
      logits[n] = s;
    }
    return logits;
  }

  /** The full transformer that init.rank_one_ builds for (e, w, a): the unit weights U of
   * explorers.reduction_weights scaled by |e| (emb, pos), |w| (w1), w (w2) and a (wv). */
  function rankOneWeights(U, e, w, a) {
    const sc = (arr, s) => Float64Array.from(arr, (v) => v * s);
    return {
      d: U.d, m: U.m, bias: U.bias, wq: U.wq, wk: U.wk, wo: U.wo,
      emb: sc(U.emb, Math.abs(e)), pos: sc(U.pos, Math.abs(e)),
      w1: sc(U.w1, Math.abs(w)), w2: sc(U.w2, w), wv: sc(U.wv, a),
    };
  }

  /** canonical.CanonicalModel with attention, bias 0: e^2 [u + 4 w|w| relu(u)],
   * u = (x - 1/2) + a (xbar - 1/2) with xbar the running mean of the bits. */
  function canonicalLogits(x, e, w, a) {
    const out = new Float64Array(x.length);
    const ww = w * Math.abs(w);
    let sum = 0;
    for (let n = 0; n < x.length; n++) {
      sum += x[n];
      const u = x[n] - 0.5 + a * (sum / (n + 1) - 0.5);
      out[n] = e * e * (u + 4 * ww * Math.max(u, 0));
    }
    return out;
  }

  // ---------------------------------------------------------------- kernels.py

  /** Softmax, Gaussian and row-normalised Gaussian attention (non-causal) of queries q and keys
   * k (row-major n x dk), bandwidth tau = c sqrt(dk). Returns arrays of n rows. */
  function kernelMatrices(q, k, n, dk, c) {
    const tau = c * Math.sqrt(dk);
    const soft = [], gauss = [], rown = [];
    for (let i = 0; i < n; i++) {
      const s = new Float64Array(n), g = new Float64Array(n), r = new Float64Array(n);
      let qq = 0;
      for (let l = 0; l < dk; l++) qq += q[i * dk + l] * q[i * dk + l];
      for (let j = 0; j < n; j++) {
        let dot = 0, kk = 0;
        for (let l = 0; l < dk; l++) {
          dot += q[i * dk + l] * k[j * dk + l];
          kk += k[j * dk + l] * k[j * dk + l];
        }
        s[j] = dot / Math.sqrt(dk);
        r[j] = -Math.max(qq + kk - 2 * dot, 0) / tau;
        g[j] = Math.exp(r[j]);
      }
      soft.push(softmax(s));
      gauss.push(g);
      rown.push(softmax(r));
    }
    return { softmax: soft, gaussian: gauss, "gaussian-rownorm": rown };
  }
  function softmax(s) {
    let mx = -Infinity, z = 0;
    for (const v of s) mx = Math.max(mx, v);
    const out = Float64Array.from(s, (v) => Math.exp(v - mx));
    for (const v of out) z += v;
    return out.map((v) => v / z);
  }

  // ---------------------------------------------------------------- helpers for the figures

  /** A plain typed-array view of a (BokehJS hands over its own typed-array subclasses, whose
   * subarray/slice do not return views), and its elements start..end as a view. */
  const TYPED = [Float64Array, Float32Array, Int32Array, Uint32Array, Int16Array, Uint16Array,
    Int8Array, Uint8Array];
  function plain(a) {
    if (!ArrayBuffer.isView(a)) return a;
    for (const T of TYPED) if (a instanceof T) return new T(a.buffer, a.byteOffset, a.length);
    return a;
  }
  function sub(a, start, end) {
    return ArrayBuffer.isView(a) ? plain(a).subarray(start, end) : a.slice(start, end);
  }

  function range(n) {
    return Array.from({ length: n }, (_, i) => i);
  }
  /** Python's format(v, f".{digits}f"), "g" with 3 significant digits and ".1e". */
  function fmt(v, digits) {
    return Number(v).toFixed(digits);
  }
  function fmtG(v) {
    return String(Number(Number(v).toPrecision(3)));
  }
  function fmtE(v) {
    const [mant, exp] = Number(v).toExponential(1).split("e");
    return `${mant}e${exp[0]}${exp.slice(1).padStart(2, "0")}`;
  }
  /** The value of a slider over log10(x). */
  function pow10(v) {
    return Math.pow(10, v);
  }
  /** A matrix (array of rows) as the 2-D array an image glyph needs (a BokehJS ndarray in the
   * page; in node, a Float64Array with a shape). */
  function image(rows) {
    const hgt = rows.length, wid = hgt ? rows[0].length : 0;
    const flat = new Float64Array(hgt * wid);
    rows.forEach((r, i) => flat.set(r, i * wid));
    const B = typeof Bokeh !== "undefined" ? Bokeh : null;
    if (B && B.require) return B.require("core/util/ndarray").ndarray(flat, { shape: [hgt, wid] });
    flat.shape = [hgt, wid];
    return flat;
  }
  function levelLines(rate, uni, x0, x1) {
    return { x0: [x0, x0], x1: [x1, x1], y: [rate, uni] };
  }

  const update = {};

  /** Chapter 1: samples, loss levels and the position on the gap map of the chain (p, q). */
  update.chain = function (M) {
    const p = M.p.value, q = M.q.value, seed = M.seed.value;
    const n = M.shape[0], L = M.shape[1];
    const off = seed * n;
    const rows = sampleChain(sub(M.u0, off, off + n), sub(M.expo, off * L, (off + n) * L),
      p, q, n, L);
    M.bits.data = { image: [image(rows)], x: [0], y: [0], dw: [L], dh: [n] };
    const H = entropyRate(p, q), U = unigramLoss(p, q);
    M.levels.data = {
      name: M.levels.data.name, value: [H, U], label: [fmt(H, 4), fmt(U, 4)],
      color: M.levels.data.color,
    };
    M.point.data = { p: [p], q: [q] };
    const corr = 1 - p - q, kind = regime(p, q) === "iid" ? "i.i.d." : regime(p, q);
    M.rasterFig.title.text = `p = ${fmt(p, 2)}, q = ${fmt(q, 2)}: ${kind}, ` +
      `lag-1 corr. ${corr >= 0 ? "+" : ""}${fmt(corr, 2)}`;
    M.barFig.title.text = `gap ${fmt(U - H, 4)} nats`;
  };

  /** Chapter 2: the loss curves of one cell of the stored (p, q) grid. */
  update.grid = function (M) {
    const G = M.grid, g = G.length, T = M.steps;
    const ip = Math.round((M.p.value - G[0]) / (G[1] - G[0]));
    const iq = Math.round((M.q.value - G[0]) / (G[1] - G[0]));
    const p = G[ip], q = G[iq];
    const cell = iq * g + ip;
    const step = range(T).map((i) => i + 1);
    const data = { step: step };
    let have = M.arms.length > 0;
    M.arms.forEach((arm, a) => {
      const off = (cell * M.arms.length + a) * T;
      const y = Array.from(sub(M.packed, off, off + T));
      if (y.every((v) => Number.isNaN(v))) have = false;
      data[arm] = y;
    });
    const d = (G[1] - G[0]) / 2;
    M.cell.data = { x: [p], y: [q], w: [2 * d], h: [2 * d] };
    if (regime(p, q) === "iid" || !have) {
      M.curves.data = Object.fromEntries(Object.keys(data).map((k) => [k, []]));
      M.levels.data = { y: [], name: [], color: [] };
      M.curveFig.title.text = regime(p, q) === "iid"
        ? `(p, q) = (${p}, ${q})\np + q = 1, an i.i.d. chain; pick another cell`
        : `(p, q) = (${p}, ${q})\nno stored run`;
      return;
    }
    M.curves.data = data;
    const H = entropyRate(p, q), U = unigramLoss(p, q);
    M.levels.data = { y: [H, U], name: ["entropy rate", "unigram loss"], color: M.levelColors };
    const span = Math.max(U - H, 0.01);
    M.curveFig.y_range.start = H - 0.3 * span;
    M.curveFig.y_range.end = U + 0.5 * span;
    M.curveFig.title.text = `(p, q) = (${p}, ${q})\nentropy rate ${fmt(H, 4)}, unigram ${fmt(U, 4)}`;
  };

  /** Chapter 3: the rank-one transformer realising (e, w, a) against the canonical model. */
  update.reduction = function (M) {
    const e = M.e.value, w = M.w.value, a = M.a.value, p = M.p.value, q = M.q.value;
    const N = M.length;
    const x = sampleChain(M.u0, M.expo, p, q, 1, N)[0];
    const U = {
      d: 8, m: 32, bias: M.unit.bias, wq: M.unit.wq, wk: M.unit.wk, wo: M.unit.wo,
      emb: M.unit.emb, pos: M.unit.pos, w1: M.unit.w1, w2: M.unit.w2, wv: M.unit.wv,
    };
    const full = transformerLogits(x, rankOneWeights(U, e, w, a));
    const canon = canonicalLogits(x, e, w, a);
    const n = range(N);
    M.seq.data = {
      n: n, bit: Array.from(x), truth: n.map((i) => (x[i] ? 1 - q : p)),
      full: Array.from(full, sigmoid), canon: Array.from(canon, sigmoid),
      logit_full: Array.from(full), logit_canon: Array.from(canon),
    };
    let diff = 0, lim = 1e-3;
    for (let i = 0; i < N; i++) {
      diff = Math.max(diff, Math.abs(full[i] - canon[i]));
      lim = Math.max(lim, 1.1 * Math.abs(full[i]), 1.1 * Math.abs(canon[i]));
    }
    M.diag.data = { x: [-lim, lim], y: [-lim, lim] };
    M.seqFig.title.text = `(e, w, a) = (${fmt(e, 2)}, ${fmt(w, 2)}, ${fmt(a, 2)}) on the chain ` +
      `(${fmt(p, 2)}, ${fmt(q, 2)})`;
    M.logitFig.title.text = `max |difference| = ${fmtE(diff)}`;
  };

  /** The basins, the global-minimum curve and the local-minimum segment of a landscape. */
  function landscapeData(land, M) {
    const g = M.basinGrid, r = g.length;
    const img = [];
    for (let i = 0; i < r; i++) {
      const row = new Array(r);
      for (let j = 0; j < r; j++) row[j] = land.basin(g[i], g[j]);
      img.push(row);
    }
    M.basins.data = {
      image: [image(img)], x: [g[0]], y: [g[0]], dw: [g[r - 1] - g[0]], dh: [g[r - 1] - g[0]],
    };
    const cw = M.curveGrid, up = [], down = [];
    for (const w of cw) {
      const e = land.globalMinimumCurve(w);
      up.push(e);
      down.push(-e);
    }
    M.gmin.data = { w: Array.from(cw).concat([NaN], Array.from(cw)), e: up.concat([NaN], down) };
    const lo = land.switching ? W_SADDLE : cw[0], hi = land.switching ? cw[cw.length - 1] : W_SADDLE;
    M.lmin.data = { w: [lo, hi], e: [0, 0] };
  }

  /** Chapter 4: gradient flow and gradient descent of the canonical model from (e0, w0). */
  update.canonical = function (M) {
    const p = M.p.value, q = M.q.value, e0 = M.e0.value, w0 = M.w0.value;
    const lr = M.lr, steps = M.gdSteps;
    if (regime(p, q) === "iid") {
      for (const s of [M.flow, M.gd, M.flowLoss, M.gdLoss, M.start])
        s.data = Object.fromEntries(Object.keys(s.data).map((k) => [k, []]));
      M.mapFig.title.text = "p + q = 1: the chain is i.i.d. and the landscape is flat; move p or q";
      return;
    }
    const land = new Landscape(p, q);
    landscapeData(land, M);
    const fl = gradientFlow(land, e0, w0, steps * lr);
    const gd = gradientDescent(land, e0, w0, lr, steps);
    const every = Math.max(1, Math.floor((steps + 1) / 60));
    const gi = range(steps + 1).filter((i) => i % every === 0);
    M.flow.data = { w: fl.w, e: fl.e };
    M.gd.data = { w: gi.map((i) => gd.w[i]), e: gi.map((i) => gd.e[i]) };
    M.flowLoss.data = { t1: fl.t.map((t) => 1 + t), loss: fl.loss };
    M.gdLoss.data = { t1: range(steps + 1).map((i) => 1 + i * lr), loss: Array.from(gd.loss) };
    M.start.data = { w: [w0], e: [e0] };
    M.levels.data = { y: [land.entropyRate, land.unigramLoss], name: M.levels.data.name,
      color: M.levels.data.color };
    const span = land.unigramLoss - land.entropyRate;
    M.lossFig.y_range.start = land.entropyRate - 0.25 * span - 0.01;
    M.lossFig.y_range.end = land.unigramLoss + 0.6 * span + 0.01;
    const startIn = land.basin(e0, w0) ? "global" : "unigram";
    const end = fl.label === 1 ? "global minimum" : "unigram line e = 0";
    M.mapFig.title.text = `(${fmt(p, 2)}, ${fmt(q, 2)}): starts in the ${startIn} basin,\n` +
      `ends at the ${end}`;
  };

  /** Chapter 4: one stored training run, projected onto (e, w), up to the chosen step. */
  update.run = function (M) {
    const r = M.runs[M.menu.value], step = M.step.value;
    const s = r.steps;
    let k = 0;
    while (k + 1 < s.length && s[k + 1] <= step) k++;
    if (M.runState.data.index[0] !== r.index) {
      const land = new Landscape(r.p, r.q);
      landscapeData(land, M);
      M.path.data = { w: Array.from(r.w), e: Array.from(r.e) };
      M.flow.data = { w: Array.from(r.flow_w), e: Array.from(r.flow_e) };
      M.lossCurve.data = { step: range(r.loss.length).map((i) => i + 1), loss: Array.from(r.loss) };
      M.canonLoss.data = { step: Array.from(s), loss: Array.from(r.canon_loss) };
      const en = { step: Array.from(s) };
      for (const name of M.energyNames) en[name] = Array.from(r.rank1[name]);
      M.energy.data = en;
      M.levels.data = { y: [land.entropyRate, land.unigramLoss], name: M.levels.data.name,
        color: M.levels.data.color };
      const span = land.unigramLoss - land.entropyRate;
      M.lossFig.y_range.start = land.entropyRate - 0.25 * span - 0.01;
      M.lossFig.y_range.end = land.unigramLoss + 0.6 * span + 0.01;
      M.runState.data = { index: [r.index] };
    }
    M.upto.data = { w: Array.from(sub(r.w, 0, k + 1)), e: Array.from(sub(r.e, 0, k + 1)) };
    M.now.data = { w: [r.w[k]], e: [r.e[k]], step: [s[k]] };
    M.start.data = { w: [r.w[0]], e: [r.e[0]] };
    M.marker.location = s[k];
    M.marker2.location = s[k];
    M.mapFig.title.text = `${r.title}\nstep ${s[k]}, (e, w) = (${fmt(r.e[k], 2)}, ${fmt(r.w[k], 2)})`;
  };

  /** Chapter 5: Gaussian starts of scale s over the basins, and Pr(global basin) against s. */
  update.init = function (M) {
    const p = M.p.value, q = M.q.value, s = pow10(M.logScale.value), seed = M.seed.value;
    const n = M.n;
    if (regime(p, q) === "iid") {
      M.starts.data = { w: [], e: [], color: [] };
      M.mapFig.title.text = "p + q = 1: the chain is i.i.d. and has no basins; move p or q";
      return;
    }
    const switching = p + q > 1;
    landscapeData(new Landscape(p, q), M);
    const z = M.normals, off = seed * n * 2;
    const e = [], w = [], color = [];
    let good = 0;
    for (let i = 0; i < n; i++) {
      const ei = s * z[off + 2 * i], wi = s * z[off + 2 * i + 1];
      const lab = basinLabel(ei, wi, switching);
      good += lab;
      e.push(ei);
      w.push(wi);
      color.push(lab ? M.colors[1] : M.colors[0]);
    }
    M.starts.data = { w: w, e: e, color: color };
    const regimeName = switching ? "switching" : "sticky";
    M.curve.data = { scale: Array.from(M.curveScale), global: Array.from(M.curveGlobal[regimeName]) };
    const meas = M.measuredRuns[regimeName];
    M.measured.data = meas ? { scale: meas.scale, success: meas.success } :
      { scale: [], success: [] };
    M.marker.location = s;
    M.mapFig.title.text = `(${fmt(p, 2)}, ${fmt(q, 2)}), starts (e0, w0) ~ N(0, ${fmtG(s)}^2 I)\n` +
      `${fmt(good / n, 2)} of ${n} in the global basin`;
    M.curveFig.title.text = `p + q ${switching ? ">" : "<"} 1 (${regimeName}), s = ${fmtG(s)}`;
  };

  /** Chapter 6: the three attention kernels on one random input. */
  update.kernel = function (M) {
    const c = pow10(M.logC.value), s = pow10(M.logScale.value), seed = M.seed.value;
    const n = M.n, dk = M.dk, off = seed * n * dk;
    const q = Float64Array.from(sub(M.q0, off, off + n * dk), (v) => v * s);
    const k = Float64Array.from(sub(M.k0, off, off + n * dk), (v) => v * s);
    const mats = kernelMatrices(q, k, n, dk, c);
    M.kernels.forEach((name, i) => {
      const S = mats[name];
      let lo = Infinity, hi = -Infinity, vmax = 0;
      for (const row of S) {
        let sum = 0;
        for (const v of row) {
          sum += v;
          vmax = Math.max(vmax, v);
        }
        lo = Math.min(lo, sum);
        hi = Math.max(hi, sum);
      }
      M.sources[i].data = { image: [image(S)], x: [-0.5], y: [-0.5], dw: [n], dh: [n] };
      M.mappers[i].high = vmax > 0 ? vmax : 1;
      M.figs[i].title.text = `${M.labels[i]}\nrow sums ${fmt(lo, 2)} to ${fmt(hi, 2)}`;
    });
    M.header.text = `c = ${fmtG(c)}, scale of W_Q, W_K = ${fmtG(s)}, seed ${seed}`;
  };

  /** Chapter 7: one dataset of the stored table (its sentences and its collocation). */
  update.dataset = function (M) {
    const K = M.K.value, N = M.N.value, L = M.L.value, seed = M.seed.value;
    const T = M.table;
    const ki = K - T.tokens[0], li = L - T.lengths[0], ni = N - T.sentences[0];
    const si = seed - T.seeds[0];
    const idx = ((ki * T.lengths.length + li) * T.sentences.length + ni) * T.seeds.length + si;
    const off = T.offset[idx];
    const empty = (src) => (src.data = Object.fromEntries(Object.keys(src.data).map((k) => [k, []])));
    if (off < 0) {
      [M.boxes, M.nexts, M.nodes, M.arrows].forEach(empty);
      M.fig.title.text = `a sentence has distinct tokens: the longest can have at most K = ${K}`;
      return;
    }
    const kmax = T.tokens[T.tokens.length - 1];
    const coff = (ki * T.seeds.length + si) * kmax;
    const colloc = Array.from(sub(T.collocation, coff, coff + K));
    const sents = [];
    let pos = off;
    for (let r = 0; r < N; r++) {
      const len = T.blob[pos];
      const toks = Array.from(sub(T.blob, pos + 1, pos + 1 + len));
      const opt = T.blob[pos + 1 + len];
      sents.push({ toks: toks, opt: opt, next: colloc[opt] });
      pos += len + 2;
    }
    renderDataset(sents, colloc, K, M);
  };

  /** Draw the dataset of update.dataset (boxes, next tokens, collocation arrows). */
  function renderDataset(sents, colloc, K, M) {
    const N = sents.length, Lmax = Math.max(...sents.map((s) => s.toks.length));
    const box = { x: [], y: [], tok: [], fill: [], line: [], width: [], sentence: [], position: [] };
    const nx = { x: [], y: [], tok: [] };
    sents.forEach((s, r) => {
      const y = N - 1 - r, x0 = Lmax - s.toks.length;
      s.toks.forEach((t, i) => {
        const isOpt = t === s.opt, isQ = i === s.toks.length - 1;
        box.x.push(x0 + i + 0.5);
        box.y.push(y + 0.5);
        box.tok.push(String(t));
        box.fill.push(isOpt ? "#fde0dd" : isQ ? "#e8eef7" : "white");
        box.line.push(isOpt ? "#d62728" : "#666666");
        box.width.push(isOpt ? 2.5 : 1);
        box.sentence.push(r);
        box.position.push(i);
      });
      nx.x.push(Lmax + 1.55);
      nx.y.push(y + 0.5);
      nx.tok.push(String(s.next));
    });
    M.boxes.data = box;
    M.nexts.data = nx;
    const height = Math.max(N, 1);
    const ys = range(K).map((x) => (K > 1 ? height - 0.1 - (x * (height - 0.2)) / (K - 1) : height / 2));
    const cx = Lmax + 3.2;
    M.nodes.data = {
      x: range(K).map(() => cx).concat(range(K).map(() => cx + 1.6)),
      y: ys.concat(ys), tok: range(K).map(String).concat(range(K).map(String)),
    };
    const ar = { x0: [], y0: [], x1: [], y1: [], src: [], dst: [] };
    colloc.forEach((nxt, x) => {
      if (nxt < 0) return;
      ar.x0.push(cx + 0.2);
      ar.y0.push(ys[x]);
      ar.x1.push(cx + 1.4);
      ar.y1.push(ys[nxt]);
      ar.src.push(x);
      ar.dst.push(nxt);
    });
    M.arrows.data = ar;
    M.fig.x_range.start = -0.2;
    M.fig.x_range.end = cx + 2.0;
    M.fig.y_range.start = -0.3;
    M.fig.y_range.end = height + 0.6;
    M.fig.title.text = `K = ${K} tokens, ${N} sentences of length 2 to ${M.L.value}, seed ` +
      `${M.seed.value}: optimal token framed red, query shaded blue, next token on the right`;
  }

  // ---------------------------------------------------------------- chapter 8 (live.py)

  /** A float16 value from its bits (numpy's float16, exactly: every float16 is a float64). */
  function halfToFloat(bits) {
    const sign = bits & 0x8000 ? -1 : 1, e = (bits >> 10) & 0x1f, f = bits & 0x3ff;
    if (e === 0) return sign * f * Math.pow(2, -24);
    if (e === 31) return f ? NaN : sign * Infinity;
    return sign * (1 + f / 1024) * Math.pow(2, e - 15);
  }

  /** live._icl_map: the attention map (m rows) of a layer at stored step k of a record, whose
   * maps are the float16 bits of the lower triangles, row by row. */
  function iclMap(r, k, layer) {
    const m = r.m, T = (m * (m + 1)) / 2, base = (k * r.layers + layer) * T;
    const bits = plain(r.maps);
    const rows = [];
    let pos = base;
    for (let i = 0; i < m; i++) {
      const row = new Float64Array(m);
      for (let j = 0; j <= i; j++) row[j] = halfToFloat(bits[pos++]);
      rows.push(row);
    }
    return rows;
  }

  /** The seed whose curves a chapter-8 figure shows (keyed by its KL source). */
  const iclShownSeed = new WeakMap();

  /** Chapter 8: a stored ICL-MC run at its stored step nearest the slider (live.icl_step_state). */
  update.icl_step = function (M) {
    const seed = Number(M.seed.value), want = M.step.value;
    const r = M.runs.find((x) => x.seed === seed);
    const s = r.steps, m = r.m, L = r.layers;
    let k = 0; // nearest stored step, ties to the earlier (numpy's argmin)
    for (let i = 1; i < s.length; i++) if (Math.abs(s[i] - want) < Math.abs(s[k] - want)) k = i;
    const step = s[k];
    for (let l = 0; l < L; l++) {
      const rows = iclMap(r, k, l);
      let vmax = 0;
      for (let i = m > 4 ? 4 : 0; i < m; i++) for (const v of rows[i]) vmax = Math.max(vmax, v);
      M.mapSources[l].data = { image: [image(rows)], x: [-0.5], y: [-0.5], dw: [m], dh: [m] };
      M.mappers[l].high = Math.max(vmax, 1e-6);
      let title = `layer ${l + 1} at step ${step}`;
      if (l === 0) title += `: previous-token score ${fmt(r.prev[k], 2)}`;
      if (l === L - 1) title += `: induction score ${fmt(r.ind[k], 2)}`;
      M.mapFigs[l].title.text = title;
    }
    if (iclShownSeed.get(M.kl) !== seed) { // the run's curves and symbols: when the seed changes
      const sym = Array.from(r.symbols, String), idx = range(m), steps = Array.from(s);
      M.symbols.data = { x: idx.concat(idx.map(() => -1.3)), y: idx.map(() => -1.3).concat(idx),
        text: sym.concat(sym) };
      const kl = { step: steps };
      for (const n of M.strategies) kl[n] = Array.from(r.kl[n]);
      M.kl.data = kl;
      M.scores.data = { step: steps, prev: Array.from(r.prev), ind: Array.from(r.ind),
        indUniform: Array.from(r.indUniform) };
      iclShownSeed.set(M.kl, seed);
    }
    const now = M.strategies.map((n) => r.kl[n][k]);
    let best = 0;
    now.forEach((v, j) => { if (v < now[best]) best = j; });
    M.klNow.data = { step: now.map(() => step), kl: now, color: M.strategyColors };
    M.scoresNow.data = { step: [step, step], score: [r.prev[k], r.ind[k]], color: M.scoreColors };
    M.klFig.title.text = `seed ${r.seed}, step ${step}: closest strategy ${M.strategies[best]}\n` +
      `loss minus Bayes loss (probe batch) ${fmt(r.gap[k], 3)} nats`;
    M.marker.location = step;
    M.marker2.location = step;
  };

  return {
    W_SADDLE, E_SADDLE, fmt, fmtG, fmtE, h, entropyRate, unigramLoss, regime, sampleChain, logaddexp, sigmoid,
    gap, separatrix, basinLabel, Landscape, gradientDescent, gradientFlow, transformerLogits,
    rankOneWeights, canonicalLogits, kernelMatrices, pow10, update, renderDataset, halfToFloat,
    iclMap,
  };
});

/* Chapter 9: the stored runs of the plateau experiments (markovformer.live_plateau). Attached to
 * the library above (window.MFLive in a page, module.exports in node), once. */
(function (root) {
  "use strict";
  const L = root && root.MFLive;
  if (!L || L.update.plateau) return;

  /** A matrix (array of rows) as an image column (as image() above). */
  function image(rows) {
    const hgt = rows.length, wid = hgt ? rows[0].length : 0;
    const flat = new Float64Array(hgt * wid);
    rows.forEach((r, i) => flat.set(r, i * wid));
    const B = typeof Bokeh !== "undefined" ? Bokeh : null;
    if (B && B.require) return B.require("core/util/ndarray").ndarray(flat, { shape: [hgt, wid] });
    flat.shape = [hgt, wid];
    return flat;
  }
  const shown = new WeakMap(); // the run whose curves a figure shows (keyed by its curve source)

  /** live_plateau.plateau_state: run (arm, seed) at its stored step nearest the slider. */
  L.update.plateau = function (M) {
    const arm = M.arm.value, seed = Number(M.seed.value), want = M.step.value;
    const r = M.runs.find((x) => x.arm === arm && x.seed === seed);
    const s = r.steps, m = r.m, floor = Math.fround(M.gapFloor);
    let k = 0; // nearest stored step, ties to the earlier (numpy's argmin)
    for (let i = 1; i < s.length; i++) {
      if (Math.abs(s[i] - want) < Math.abs(s[k] - want)) { k = i; }
    }
    const step = s[k];
    for (let l = 0; l < 2; l++) {
      const rows = L.iclMap(r, k, l);
      let vmax = 0;
      for (let i = m > 4 ? 4 : 0; i < m; i++) for (const v of rows[i]) vmax = Math.max(vmax, v);
      M.mapSources[l].data = { image: [image(rows)], x: [-0.5], y: [-0.5], dw: [m], dh: [m] };
      M.mappers[l].high = Math.max(vmax, 1e-6);
    }
    M.map1Fig.title.text = `layer 1: previous-token score ${L.fmt(r.prev[k], 2)}`;
    M.map2Fig.title.text = `layer 2: induction score ${L.fmt(r.ind[k], 2)}`;
    const gap = Array.from(r.gap, (v) => Math.max(v, floor));
    if (shown.get(M.curves) !== r) { // the run's curves, symbols and levels: when the run changes
      const sym = Array.from(r.symbols, String), idx = Array.from({ length: m }, (_, i) => i);
      M.symbols.data = { x: idx.concat(idx.map(() => -1.3)), y: idx.map(() => -1.3).concat(idx),
        text: sym.concat(sym) };
      const curves = { step: Array.from(s), gap: gap };
      for (const n of M.strategies) curves[n] = Array.from(r.kl[n]);
      M.curves.data = curves;
      M.level.data = { y: [r.unigramGap] };
      M.escape.data = { x: r.escape >= 0 ? [r.escape] : [] };
      shown.set(M.curves, r);
    }
    M.gapNow.data = { step: [step], gap: [gap[k]] };
    const now = M.strategies.map((n) => r.kl[n][k]);
    let best = 0;
    now.forEach((v, j) => { if (v < now[best]) best = j; });
    M.klNow.data = { step: now.map(() => step), kl: now, color: M.strategyColors };
    M.gapFig.title.text = `${r.label}, seed ${r.seed}, step ${step}:\n` +
      `loss minus bigram loss ${L.fmt(r.gap[k], 3)} nats`;
    const when = r.escape >= 0 ? `escape at step ${r.escape}` : `no escape by step ${s[s.length - 1]}`;
    M.klFig.title.text = `closest strategy at step ${step}: ${M.strategies[best]}; ${when}`;
    M.marker.location = step;
    M.marker2.location = step;
  };
})(typeof window !== "undefined" ? window : globalThis);
