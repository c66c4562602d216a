/* The classifier page: loads ONNX Runtime Web and the model from the files beside it (no
 * network, works from file://), classifies picked or dropped photos and the webcam with
 * predict.py's exact preprocessing (preprocess.js), and shows the top-k probabilities.
 *
 * Why everything arrives as <script> files: a page opened from file:// may not fetch()
 * or import() other files (Chromium blocks them as cross-origin), but it may run classic
 * scripts.  So ort-wasm.js carries ONNX Runtime's WebAssembly (gzip, base64) and its
 * Emscripten glue module (as text, imported from a blob: URL), and model.js carries the
 * model (gzip, base64) and its description.  One thread, no proxy worker: threads need
 * cross-origin isolation, which file:// and most static hosts do not give.
 */
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const MAX_PIXELS = 89478485;  // Pillow's decompression-bomb limit, as predict.py applies
  const TOPK = 5;
  let session = null;
  let description = null;
  let streaming = false;

  function status(text, isError) {
    const el = $("status");
    el.textContent = text;
    el.className = isError ? "error" : "";
  }

  async function gunzipBase64(text) {
    const bin = atob(text);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  async function load() {
    const t0 = performance.now();
    if (!window.ort || !window.ORT_WASM || !window.MODEL) {
      throw new Error("a file of the page is missing (ort.wasm.min.js, ort-wasm.js or model.js)");
    }
    description = window.MODEL.description;
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.proxy = false;
    ort.env.wasm.wasmBinary = await gunzipBase64(window.ORT_WASM.wasm_gz_b64);
    ort.env.wasm.wasmPaths = {
      mjs: URL.createObjectURL(new Blob([window.ORT_WASM.glue_mjs], { type: "text/javascript" })),
    };
    const model = await gunzipBase64(window.MODEL.onnx_gz_b64);
    session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"] });
    const [h, w] = description.input_shape;
    $("model").textContent = `${description.backbone}, ${description.classes.length} classes, ` +
      `${h}x${w} input` + (description.temperature ? `, temperature ${description.temperature}` : "");
    window.loadMs = performance.now() - t0;
    status(`Ready (loaded in ${(window.loadMs / 1000).toFixed(1)} s). Pick or drop a photo, or start the webcam.`);
    document.body.dataset.ready = "1";
  }

  /** RGB image -> {probabilities, pixels, logits, ms}: preprocess exactly as predict.py. */
  async function classify(rgb) {
    const t0 = performance.now();
    const crop = Preprocess.evalImage(rgb, description, window.MODEL.pillow);
    const x = Preprocess.normalize(crop, description.mean, description.std);
    const [h, w] = description.input_shape;
    const feeds = { [session.inputNames[0]]: new ort.Tensor("float32", x, [1, 3, h, w]) };
    const out = await session.run(feeds);
    const logits = Array.from(out[session.outputNames[0]].data);
    const probabilities = Preprocess.softmax(logits, description.temperature);
    return { probabilities, logits, crop, ms: performance.now() - t0 };
  }

  function show(result, label) {
    const order = result.probabilities.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
    const list = $("topk");
    list.innerHTML = "";
    for (const [p, i] of order.slice(0, Math.min(TOPK, order.length))) {
      const li = document.createElement("li");
      li.dataset.class = description.classes[i];
      li.dataset.probability = String(p);
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = description.classes[i];
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${(p * 100).toFixed(1)}%`;
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = `${(p * 100).toFixed(2)} %`;
      li.append(name, value, bar);
      list.append(li);
    }
    // What the model saw: the centre crop, enlarged without smoothing.
    const c = result.crop, canvas = $("seen");
    canvas.width = c.width; canvas.height = c.height;
    const img = new ImageData(c.width, c.height);
    for (let i = 0, j = 0; j < c.data.length; i += 4, j += 3) {
      img.data[i] = c.data[j]; img.data[i + 1] = c.data[j + 1]; img.data[i + 2] = c.data[j + 2];
      img.data[i + 3] = 255;
    }
    canvas.getContext("2d").putImageData(img, 0, 0);
    $("caption").textContent = `${label} — ${result.ms.toFixed(0)} ms`;
    window.lastResult = { label, probabilities: result.probabilities, logits: result.logits,
                          pixels: Array.from(c.data), ms: result.ms };
    document.body.dataset.results = String((+document.body.dataset.results || 0) + 1);
  }

  /** A picked or dropped file -> upright 8-bit RGB, as utils/data/image.py load_image:
   * EXIF orientation applied, no colour management (Pillow ignores ICC profiles),
   * transparency over white. */
  async function decode(file) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, { imageOrientation: "from-image",
        colorSpaceConversion: "none", premultiplyAlpha: "none" });
    } catch (e) {
      throw new Error(`cannot read ${file.name}: not an image this browser can decode`);
    }
    const { width, height } = bitmap;
    if (width * height > MAX_PIXELS) {
      throw new Error(`cannot read ${file.name}: image too large (${width}x${height})`);
    }
    const canvas = document.createElement("canvas");
    canvas.width = width; canvas.height = height;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0);
    bitmap.close();
    return Preprocess.rgbaToRgb(width, height, ctx.getImageData(0, 0, width, height).data);
  }

  async function onFiles(files) {
    for (const file of files) {
      try {
        status(`Classifying ${file.name} ...`);
        show(await classify(await decode(file)), file.name);
        status(`Classified ${file.name}.`);
      } catch (e) {
        status(String(e.message || e), true);
      }
    }
  }

  async function webcam() {
    const button = $("webcam");
    if (streaming) {
      streaming = false;
      const video = $("video");
      video.srcObject.getTracks().forEach((t) => t.stop());
      video.srcObject = null;
      video.classList.remove("on");
      button.textContent = "Start webcam";
      return;
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
      const video = $("video");
      video.srcObject = stream;
      await video.play();
      video.classList.add("on");
      streaming = true;
      button.textContent = "Stop webcam";
      const canvas = document.createElement("canvas");
      const ctx = canvas.getContext("2d", { willReadFrequently: true });
      const loop = async () => {
        if (!streaming) return;
        if (video.videoWidth) {
          canvas.width = video.videoWidth; canvas.height = video.videoHeight;
          ctx.drawImage(video, 0, 0);
          const rgba = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
          show(await classify(Preprocess.rgbaToRgb(canvas.width, canvas.height, rgba)), "webcam");
        }
        setTimeout(loop, 100);  // leave the CPU some air between frames
      };
      loop();
    } catch (e) {
      status(`Webcam unavailable: ${e.message || e}`, true);
    }
  }

  window.addEventListener("DOMContentLoaded", () => {
    $("file").addEventListener("change", (e) => onFiles(e.target.files));
    const drop = $("drop");
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      onFiles(e.dataTransfer.files);
    });
    $("webcam").addEventListener("click", webcam);
    if (!navigator.mediaDevices) $("webcam").disabled = true;
    load().catch((e) => {
      status(`Could not load the model: ${e.message || e}`, true);
      document.body.dataset.ready = "error";
    });
  });
})();
