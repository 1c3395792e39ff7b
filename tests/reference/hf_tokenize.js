// Tokenizer conformance: vacc's tokenizer against Hugging Face tokenizers (the native library,
// through the npm package @anush008/tokenizers), with the real Qwen tokenizer.json.
//
//   node hf_tokenize.js VACC_BINARY CORPUS.jsonl [TOKENIZER_DIR]
//
// For every {"text": ...} item of the corpus it encodes with Hugging Face (the reference ids),
// runs `vacc tokenize --jsonl` on the corpus and compares every id, runs `vacc tokenize
// --jsonl --decode` on vacc's ids and checks the text comes back as the NFC form of the input
// (and as Hugging Face decodes it), checks the plain (non-JSONL) mode on the whole corpus as one
// text, and checks that a bad JSONL line is an error naming its line. Exits non-zero on any
// difference, or when the cached tokenizer / node package is missing (run
// scripts/setup.sh --tests).
// (The NFC check holds for this corpus; it would not for a combining mark right after an added
// token such as "<|im_end|>\u0338", where Hugging Face, and vacc, normalise each side apart.)
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync } = require('child_process');

const SETUP_HINT = 'run scripts/setup.sh --tests to fetch them';

function die(message) {
  console.error(`tokenizer_conformance: FAILED: ${message}`);
  process.exit(1);
}

const [vaccBinary, corpusFile, tokenizerArg] = process.argv.slice(2);
if (!vaccBinary || !corpusFile) die('usage: node hf_tokenize.js VACC_BINARY CORPUS.jsonl [TOKENIZER_DIR]');

const cache = path.join(process.env.VACC_HOME || path.join(os.homedir(), '.vacc'), 'cache');
const tokenizerDir = tokenizerArg || path.join(cache, 'tokenizers', 'qwen');
const tokenizerJson = path.join(tokenizerDir, 'tokenizer.json');
const nodeModules = path.join(cache, 'node', 'node_modules');
if (!fs.existsSync(tokenizerJson)) die(`the Qwen tokenizer is missing (${tokenizerJson}); ${SETUP_HINT}`);
let hf;
try {
  hf = require(path.join(nodeModules, '@anush008', 'tokenizers'));
} catch (e) {
  die(`the Hugging Face tokenizers node package is missing or broken (${nodeModules}: ${e.message}); ${SETUP_HINT}`);
}

function runVacc(args, input) {
  const r = spawnSync(vaccBinary, ['tokenize', '--tokenizer', tokenizerDir, ...args], {
    input, maxBuffer: 1 << 30, encoding: 'utf8',
  });
  if (r.error) die(`cannot run ${vaccBinary}: ${r.error.message}`);
  return r;
}

function sameIds(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function describeDifference(text, want, got, tokenizer) {
  let i = 0;
  while (i < want.length && i < got.length && want[i] === got[i]) i++;
  const show = (ids) => JSON.stringify(ids.slice(Math.max(0, i - 2), i + 4).map(
      (id) => `${id}:${tokenizer.idToToken(id)}`));
  return `text ${JSON.stringify(text.slice(0, 120))}: ${want.length} ids expected, ${got.length} got; ` +
      `first difference at id ${i}: expected ${show(want)}, got ${show(got)}`;
}

(async () => {
  const tokenizer = hf.Tokenizer.fromFile(tokenizerJson);
  const corpus = fs.readFileSync(corpusFile, 'utf8');
  const lines = corpus.split('\n').filter((l) => l.trim() !== '');
  const texts = lines.map((l, i) => {
    try {
      return JSON.parse(l).text;
    } catch (e) {
      return die(`${corpusFile} line ${i + 1}: ${e.message}`);
    }
  });

  // The reference.
  const reference = [];
  const referenceText = [];
  for (const text of texts) {
    const encoding = await tokenizer.encode(text);
    reference.push(Array.from(encoding.getIds()));
    referenceText.push(await tokenizer.decode(reference[reference.length - 1], false));
  }

  const failures = [];
  let compared = 0;

  // 1. vacc tokenize --jsonl: every id.
  const encoded = runVacc(['--jsonl'], corpus);
  if (encoded.status !== 0) die(`vacc tokenize --jsonl failed: ${encoded.stderr}`);
  const outLines = encoded.stdout.split('\n').filter((l) => l !== '');
  if (outLines.length !== texts.length) {
    die(`vacc tokenize --jsonl wrote ${outLines.length} lines for ${texts.length} items`);
  }
  const vaccIds = outLines.map((l) => JSON.parse(l).ids);
  texts.forEach((text, i) => {
    compared += reference[i].length;
    if (!sameIds(reference[i], vaccIds[i])) {
      failures.push(`item ${i + 1} ids: ${describeDifference(text, reference[i], vaccIds[i], tokenizer)}`);
    }
  });

  // 2. Decoding vacc's ids gives the NFC form of the text, and what Hugging Face decodes.
  const decoded = runVacc(['--jsonl', '--decode'], outLines.join('\n') + '\n');
  if (decoded.status !== 0) die(`vacc tokenize --jsonl --decode failed: ${decoded.stderr}`);
  const decodedTexts = decoded.stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l).text);
  if (decodedTexts.length !== texts.length) {
    die(`vacc tokenize --jsonl --decode wrote ${decodedTexts.length} lines for ${texts.length} items`);
  }
  texts.forEach((text, i) => {
    if (decodedTexts[i] !== text.normalize('NFC')) {
      failures.push(`item ${i + 1}: decode(encode(text)) ${JSON.stringify(decodedTexts[i].slice(0, 120))} ` +
                    `is not NFC(text) ${JSON.stringify(text.normalize('NFC').slice(0, 120))}`);
    } else if (decodedTexts[i] !== referenceText[i]) {
      failures.push(`item ${i + 1}: decode differs from Hugging Face's ${JSON.stringify(referenceText[i].slice(0, 120))}`);
    }
  });

  // 3. Plain mode: the whole corpus as one text, ids separated by spaces.
  const whole = texts.join('\n');
  const wholeReference = Array.from((await tokenizer.encode(whole)).getIds());
  const plain = runVacc([], whole);
  if (plain.status !== 0) die(`vacc tokenize (plain) failed: ${plain.stderr}`);
  const plainIds = plain.stdout.trim().split(/\s+/).filter((s) => s !== '').map(Number);
  compared += wholeReference.length;
  if (!sameIds(wholeReference, plainIds)) {
    failures.push(`plain mode (whole corpus): ${describeDifference(whole, wholeReference, plainIds, tokenizer)}`);
  }

  // 4. A bad line is an error naming its line number.
  const bad = runVacc(['--jsonl'], '{"text": "fine"}\n{"text": 5}\n');
  if (bad.status === 0 || !/line 2/.test(bad.stderr)) {
    failures.push(`a bad JSONL line: expected an error naming line 2, got status ${bad.status}, stderr ${JSON.stringify(bad.stderr)}`);
  }

  if (failures.length > 0) {
    console.error(failures.join('\n'));
    die(`${failures.length} difference(s) from Hugging Face tokenizers`);
  }
  console.log(`tokenizer_conformance: OK: ${texts.length} corpus items, ${compared} ids identical to ` +
              `Hugging Face tokenizers (items one by one, then the whole corpus as one text); ` +
              `decode(encode(text)) == NFC(text) for every item`);
})().catch((e) => die(e.stack || String(e)));
