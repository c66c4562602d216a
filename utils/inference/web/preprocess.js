/* Evaluation preprocessing of the image classifier, bit-exact with predict.py.
 *
 * predict.py reads an image with Pillow (EXIF transpose, RGB), resizes it to cover
 * input_shape / crop_fraction with Image.BILINEAR and reducing_gap=3.0, centre-crops to
 * input_shape and normalises as float32 (pixel - 255*mean) / (255*std)
 * (utils/data/preprocess.py: resize_cover, eval_array, normalize_array).  A canvas
 * drawImage resamples differently, so this file re-implements Pillow's own arithmetic:
 *
 *  - Image.resize with reducing_gap: an integer box-average first (ImagingReduce, Reduce.c)
 *    when the image is >= 2 * reducing_gap times larger, then
 *  - ImagingResample (Resample.c): separable convolution, horizontal pass then vertical,
 *    bilinear filter whose support grows with the downscale factor, coefficients
 *    normalised to 22-bit fixed point, each pass rounded and clipped to 8 bits;
 *    the source box is float32, as Pillow's C code receives it.
 *
 * Images here are {width, height, data: Uint8Array of width*height*3 RGB bytes}.
 * Works in a browser (window.Preprocess) and in Node (module.exports), for tests.
 */
(function (root) {
  "use strict";

  const PRECISION_BITS = 32 - 8 - 2;  // Resample.c: 8-bit result, 2 bits for overflow
  const REDUCING_GAP = 3.0;           // resize_cover's reducing_gap
  const WHOLE_RESIZE_MAX = 4;         // resize_cover's _WHOLE_RESIZE_MAX
  const f32 = Math.fround;

  /** Python's round(): halves go to the even neighbour. */
  function pyRound(x) {
    const r = Math.round(x);
    return (Math.abs(x % 1) === 0.5 && r % 2 !== 0) ? r - 1 : r;
  }

  function bilinear(x) {
    if (x < 0) x = -x;
    return x < 1 ? 1 - x : 0;
  }

  /** Resample.c precompute_coeffs + normalize_coeffs_8bpc, for the bilinear filter.
   * in0/in1 are float32 box edges; returns {ksize, bounds: [xmin, count]*, kk: Int32}. */
  function coefficients(inSize, in0, in1, outSize) {
    const scale = f32(in1 - in0) / outSize;      // C: (double)(float - float) / int
    const filterscale = scale < 1 ? 1 : scale;
    const support = 1.0 * filterscale;          // BILINEAR support is 1.0
    const ksize = Math.ceil(support) * 2 + 1;
    const bounds = new Int32Array(outSize * 2);
    const kk = new Int32Array(outSize * ksize);
    const k = new Float64Array(ksize);
    const ss = 1.0 / filterscale;
    for (let xx = 0; xx < outSize; xx++) {
      const center = in0 + (xx + 0.5) * scale;
      let xmin = Math.trunc(center - support + 0.5);   // C casts truncate
      if (xmin < 0) xmin = 0;
      let xmax = Math.trunc(center + support + 0.5);
      if (xmax > inSize) xmax = inSize;
      xmax -= xmin;
      let ww = 0.0;
      for (let x = 0; x < xmax; x++) {
        const w = bilinear((x + xmin - center + 0.5) * ss);
        k[x] = w;
        ww += w;
      }
      for (let x = 0; x < xmax; x++) {
        const v = ww !== 0.0 ? k[x] / ww : k[x];
        kk[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS))
                                   : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
      }
      bounds[xx * 2] = xmin;
      bounds[xx * 2 + 1] = xmax;
    }
    return { ksize, bounds, kk };
  }

  function clip8(ss) {
    const v = ss >> PRECISION_BITS;  // |ss| < 2^31 for 8-bit input and bilinear weights
    return v < 0 ? 0 : v > 255 ? 255 : v;
  }

  /** One separable pass over 8-bit RGB: `horizontal` convolves along rows, else along
   * columns; `offset` is the first source row a horizontal pass reads. */
  function pass(src, outW, outH, c, horizontal, offset) {
    const out = new Uint8Array(outW * outH * 3);
    const half = 1 << (PRECISION_BITS - 1);
    const rowLen = src.width * 3;
    for (let yy = 0; yy < outH; yy++) {
      for (let xx = 0; xx < outW; xx++) {
        const j = horizontal ? xx : yy;
        const first = c.bounds[j * 2], n = c.bounds[j * 2 + 1], kb = j * c.ksize;
        const step = horizontal ? 3 : rowLen;
        let p = horizontal ? (yy + offset) * rowLen + first * 3 : first * rowLen + xx * 3;
        let s0 = half, s1 = half, s2 = half;
        for (let i = 0; i < n; i++, p += step) {
          const w = c.kk[kb + i];
          s0 += src.data[p] * w; s1 += src.data[p + 1] * w; s2 += src.data[p + 2] * w;
        }
        const o = (yy * outW + xx) * 3;
        out[o] = clip8(s0); out[o + 1] = clip8(s1); out[o + 2] = clip8(s2);
      }
    }
    return { width: outW, height: outH, data: out };
  }

  /** ImagingResample(imIn, xsize, ysize, BILINEAR, box) for 8-bit RGB (Resample.c,
   * ImagingResampleInner).  Each pass rounds to 8 bits, so the order of the passes
   * changes pixels: Pillow 13 runs the vertical pass first when the height shrinks by
   * more than twice as many pixels as the width (python-pillow/Pillow#9549); earlier
   * releases always run the horizontal pass first (`pillowMajor` < 13). */
  function resample(im, xsize, ysize, box, pillowMajor) {
    box = box.map(f32);  // Pillow's C side takes the box as float[4]
    const needH = xsize !== im.width || box[0] !== 0 || box[2] !== xsize;
    const needV = ysize !== im.height || box[1] !== 0 || box[3] !== ysize;
    const horizontalFirst = (pillowMajor ?? 13) < 13 ||
      !((im.height - ysize) > 0 && (im.height - ysize) > (im.width - xsize) * 2);
    const vert = needV || (needH && horizontalFirst)
      ? coefficients(im.height, box[1], box[3], ysize) : null;
    const hor = needH ? coefficients(im.width, box[0], box[2], xsize) : null;
    let out = im;
    if (horizontalFirst) {
      if (needH) {
        // Only the source rows the vertical pass will read: vert.bounds shift by yFirst.
        const yFirst = vert.bounds[0];
        const yLast = vert.bounds[ysize * 2 - 2] + vert.bounds[ysize * 2 - 1];
        for (let i = 0; i < ysize; i++) vert.bounds[i * 2] -= yFirst;
        out = pass(out, xsize, yLast - yFirst, hor, true, yFirst);
      }
      if (needV) out = pass(out, xsize, ysize, vert, false, 0);
    } else {
      if (needV) out = pass(out, im.width, ysize, vert, false, 0);
      if (needH) out = pass(out, xsize, ysize, hor, true, 0);
    }
    return out === im ? { width: im.width, height: im.height, data: im.data.slice() } : out;
  }

  /** Reduce.c division_UINT32: (UINT32)((float)2^32 / (float)(256 * divider)). */
  function multiplier(count) {
    return Math.trunc(f32(4294967296 / f32(256 * count)));
  }

  /** Image.reduce((fx, fy), box) (ImagingReduce): box-average fx x fy blocks of the
   * integer box [x0, y0, x1, y1]; partial blocks at the right and bottom edges average
   * what they cover.  Every path of Reduce.c computes ((sum + n/2) * mult(n)) >> 24. */
  function reduce(im, fx, fy, box) {
    const [x0, y0, x1, y1] = box;
    const bw = x1 - x0, bh = y1 - y0;
    const ow = Math.trunc((bw + fx - 1) / fx), oh = Math.trunc((bh + fy - 1) / fy);
    const out = new Uint8Array(ow * oh * 3);
    for (let y = 0; y < oh; y++) {
      const ya = y0 + y * fy, yb = Math.min(ya + fy, y1);
      for (let x = 0; x < ow; x++) {
        const xa = x0 + x * fx, xb = Math.min(xa + fx, x1);
        const n = (yb - ya) * (xb - xa);
        const m = multiplier(n), amend = Math.trunc(n / 2);
        let s0 = amend, s1 = amend, s2 = amend;
        for (let yy = ya; yy < yb; yy++) {
          let p = (yy * im.width + xa) * 3;
          for (let xx = xa; xx < xb; xx++, p += 3) {
            s0 += im.data[p]; s1 += im.data[p + 1]; s2 += im.data[p + 2];
          }
        }
        const o = (y * ow + x) * 3;
        // (s * m) < 2^32: exact in a double; >> 24 as a division
        out[o] = Math.floor(s0 * m / 16777216);
        out[o + 1] = Math.floor(s1 * m / 16777216);
        out[o + 2] = Math.floor(s2 * m / 16777216);
      }
    }
    return { width: ow, height: oh, data: out };
  }

  function crop(im, left, top, w, h) {
    const out = new Uint8Array(w * h * 3);
    for (let y = 0; y < h; y++) {
      const s = ((y + top) * im.width + left) * 3;
      out.set(im.data.subarray(s, s + w * 3), y * w * 3);
    }
    return { width: w, height: h, data: out };
  }

  /** Image.resize(size, BILINEAR, box, reducing_gap=3.0) (Pillow's Image.py). */
  function resize(im, w, h, box, pillowMajor) {
    box = box || [0, 0, im.width, im.height];
    if (im.width === w && im.height === h && box[0] === 0 && box[1] === 0 &&
        box[2] === im.width && box[3] === im.height) {
      return { width: w, height: h, data: im.data.slice() };
    }
    const fx = Math.trunc((box[2] - box[0]) / w / REDUCING_GAP) || 1;
    const fy = Math.trunc((box[3] - box[1]) / h / REDUCING_GAP) || 1;
    if (fx > 1 || fy > 1) {
      // Image._get_safe_box: the box grown by the filter's reach (bilinear: 0.5 * scale)
      const supX = 0.5 * ((box[2] - box[0]) / w), supY = 0.5 * ((box[3] - box[1]) / h);
      const rb = [Math.max(0, Math.trunc(box[0] - supX)), Math.max(0, Math.trunc(box[1] - supY)),
                  Math.min(im.width, Math.ceil(box[2] + supX)),
                  Math.min(im.height, Math.ceil(box[3] + supY))];
      im = reduce(im, fx, fy, rb);
      box = [(box[0] - rb[0]) / fx, (box[1] - rb[1]) / fy,
             (box[2] - rb[0]) / fx, (box[3] - rb[1]) / fy];
    }
    return resample(im, w, h, box, pillowMajor);
  }

  /** utils/data/preprocess.py resize_cover: resize keeping the aspect ratio so the image
   * covers (h, w), then centre-crop to it (only the kept box resampled for long shapes). */
  function resizeCover(im, h, w, pillowMajor) {
    const scale = Math.max(h / im.height, w / im.width);
    const newW = Math.max(w, pyRound(im.width * scale));
    const newH = Math.max(h, pyRound(im.height * scale));
    const left = Math.floor((newW - w) / 2), top = Math.floor((newH - h) / 2);
    if (newW * newH > WHOLE_RESIZE_MAX * w * h) {
      const sx = im.width / newW, sy = im.height / newH;
      return resize(im, w, h, [left * sx, top * sy, (left + w) * sx, (top + h) * sy],
                    pillowMajor);
    }
    if (newW !== im.width || newH !== im.height) im = resize(im, newW, newH, null, pillowMajor);
    return crop(im, left, top, w, h);
  }

  /** eval_array: the (h, w) centre of the image resized to cover input / crop_fraction;
   * `pillow`: the Pillow version predict.py ran with at export (its resampling is copied). */
  function evalImage(im, description, pillow) {
    const [h, w] = description.input_shape;
    const crop_fraction = description.crop_fraction ?? 1.0;
    const bh = pyRound(h / crop_fraction), bw = pyRound(w / crop_fraction);
    const major = pillow ? parseInt(pillow, 10) : 13;
    const base = resizeCover(im, bh, bw, major);
    return crop(base, Math.floor((bw - w) / 2), Math.floor((bh - h) / 2), w, h);
  }

  /** normalize_array: float32 NCHW (1, 3, H, W) of (pixel - 255*mean) / (255*std),
   * with float32 rounding at each step, as numpy computes it. */
  function normalize(im, mean, std) {
    const plane = im.width * im.height;
    const out = new Float32Array(3 * plane);
    for (let c = 0; c < 3; c++) {
      const m = f32(f32(mean[c]) * 255), s = f32(f32(std[c]) * 255);
      for (let i = 0; i < plane; i++) out[c * plane + i] = f32(f32(im.data[i * 3 + c] - m) / s);
    }
    return out;
  }

  /** RGBA bytes (ImageData) -> RGB, composited over white where transparent, as
   * utils/data/image.py to_rgb does: Image.alpha_composite(white, image), whose integer
   * arithmetic (AlphaComposite.c, 7 extra bits) is reproduced.  A canvas hands back
   * premultiplied-then-unpremultiplied colours, so semi-transparent pixels can still be a
   * level off Pillow's; opaque and fully transparent pixels are exact. */
  function rgbaToRgb(width, height, rgba) {
    const out = new Uint8Array(width * height * 3);
    const P = 7;
    for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
      const a = rgba[i + 3];
      if (a === 255) {
        out[j] = rgba[i]; out[j + 1] = rgba[i + 1]; out[j + 2] = rgba[i + 2];
      } else if (a === 0) {
        out[j] = out[j + 1] = out[j + 2] = 255;
      } else {
        const outa255 = a * 255 + 255 * (255 - a);
        const coef1 = Math.floor(a * 255 * 255 * (1 << P) / outa255);
        const coef2 = 255 * (1 << P) - coef1;
        for (let c = 0; c < 3; c++) {
          const t = rgba[i + c] * coef1 + 255 * coef2 + (0x80 << P);
          out[j + c] = (((t >>> 8) + t) >>> 8) >>> P;
        }
      }
    }
    return { width, height, data: out };
  }

  /** Softmax of logits / temperature (float64). */
  function softmax(logits, temperature) {
    const t = temperature || 1.0;
    let max = -Infinity;
    for (const v of logits) max = Math.max(max, v / t);
    const e = Array.from(logits, (v) => Math.exp(v / t - max));
    const sum = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / sum);
  }

  const api = { pyRound, coefficients, resample, reduce, resize, crop, resizeCover,
                evalImage, normalize, rgbaToRgb, softmax };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.Preprocess = api;
})(typeof self !== "undefined" ? self : this);
