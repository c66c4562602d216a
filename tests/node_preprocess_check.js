// preprocess.js against Pillow, case by case, for tests/test_web_export.py:
//   node node_preprocess_check.js PREPROCESS_JS CASES_DIR PILLOW_VERSION
// CASES_DIR/cases.json lists raw RGB inputs and the pixels the project's eval_array made of
// them; prints one line per case that differs and "N passed, M failed"; exit 1 on a mismatch.
const fs = require("fs");
const path = require("path");
const [preprocessJs, dir, pillow] = process.argv.slice(2);
const P = require(path.resolve(preprocessJs));
const cases = JSON.parse(fs.readFileSync(path.join(dir, "cases.json")));
let bad = 0;
for (const c of cases) {
  const data = new Uint8Array(fs.readFileSync(path.join(dir, c.input)));
  const expected = new Uint8Array(fs.readFileSync(path.join(dir, c.expected)));
  const out = P.evalImage({ width: c.width, height: c.height, data },
                          { input_shape: c.input_shape, crop_fraction: c.crop_fraction }, pillow);
  let differing = out.data.length === expected.length ? 0 : -1;
  for (let i = 0; differing >= 0 && i < expected.length; i++) {
    if (out.data[i] !== expected[i]) differing++;
  }
  if (differing) {
    bad++;
    console.log(`${c.name}: ${differing < 0 ? "wrong size" : differing + " values differ"}`);
  }
}
console.log(`${cases.length - bad} passed, ${bad} failed`);
process.exit(bad ? 1 : 0);
