// Wiring: settings, the three ways in (choose, drop, paste), and the run over the cards.
//
// Several images are sent as parallel POST /v1/classify calls, not one /v1/classify/batch:
// each card fills in as soon as its own answer arrives, an oversized or broken file fails
// only its own card (the batch endpoint refuses the whole request when one file is too
// large), and the server's dynamic batcher still puts concurrent calls into one engine batch.

import { ApiError, apiKey, classify, listModels } from "./api.js";
import { Card } from "./cards.js";
import { sentenceFor } from "./messages.js";

// Below the browser's six connections per host, so the model list and retries get through.
const PARALLEL = 4;
const MODELS_RETRY_MS = 2000;

const byId = (id) => document.getElementById(id);
const ui = {
  controls: byId("controls"),
  modelField: byId("model-field"),
  model: byId("model"),
  modelInfoField: byId("model-info-field"),
  modelInfo: byId("model-info"),
  topK: byId("top-k"),
  auth: byId("auth"),
  apiKey: byId("api-key"),
  file: byId("file"),
  status: byId("status"),
  results: byId("results"),
  clear: byId("clear"),
};

const DEFAULT_TOP_K = 3; // the API's default
const RERUN_DELAY_MS = 300;

let cards = []; // newest first; every selection adds to them
let run = new AbortController(); // aborted by "Clear"
const waiting = []; // cards queued for a request
let lanes = 0;

function settings() {
  const topK = Math.min(20, Math.max(1, Number.parseInt(ui.topK.value, 10) || DEFAULT_TOP_K));
  ui.topK.value = String(topK);
  return { model: ui.modelField.hidden ? null : ui.model.value, topK };
}

function showModels(models) {
  const describe = (m) =>
    `${m.name} v${m.version} (${m.engine}, ${m.precision})` +
    (m.weights === "random" ? ": random weights, predictions are meaningless" : "");
  if (models.length > 1) {
    const chosen = ui.model.value;
    ui.model.replaceChildren(...models.map((m) => new Option(describe(m), m.name)));
    if (models.some((m) => m.name === chosen)) ui.model.value = chosen;
  }
  ui.modelField.hidden = models.length <= 1;
  ui.modelInfoField.hidden = models.length > 1;
  if (models.length === 1) ui.modelInfo.textContent = describe(models[0]);
}

async function loadModels() {
  try {
    const models = await listModels();
    if (models.length === 0) {
      ui.modelInfo.textContent = "The model is still loading…";
      setTimeout(loadModels, MODELS_RETRY_MS);
    }
    showModels(models);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    ui.modelInfoField.hidden = false;
    ui.modelInfo.textContent = `${sentenceFor(error)} Error code: ${error.code}`;
    if (error.status === 401 || error.status === 403) ui.auth.open = true;
    else setTimeout(loadModels, MODELS_RETRY_MS);
  }
}

function updateStatus() {
  const count = (state) => cards.filter((card) => card.state === state).length;
  const [pending, failed] = [count("pending"), count("failed")];
  const images = cards.length === 1 ? "1 image" : `${cards.length} images`;
  const done = cards.length - pending;
  let text = `${images} classified.`;
  if (cards.length === 0) text = "";
  else if (pending > 0) text = `Classifying ${images}… ${done} done.`;
  else if (failed > 0) text = `${images}: ${done - failed} classified, ${failed} failed.`;
  ui.status.textContent = text;
  ui.clear.hidden = cards.length === 0;
}

async function classifyCard(card, signal) {
  const options = settings(); // when it is sent: a changed k or model applies at once
  const attempt = card.begin();
  updateStatus();
  const started = performance.now();
  try {
    const response = await classify(card.file, { ...options, signal });
    if (card.current(attempt)) card.result(response, performance.now() - started, options);
  } catch (error) {
    if (signal.aborted) return; // cleared
    if (!(error instanceof ApiError)) throw error;
    if (card.current(attempt)) card.error(error);
  }
  updateStatus();
}

function enqueue(list) {
  for (const card of list) {
    if (!waiting.includes(card)) waiting.push(card);
    card.pending();
  }
  updateStatus();
  const { signal } = run;
  const lane = async () => {
    lanes += 1;
    for (let card = waiting.shift(); card && !signal.aborted; card = waiting.shift()) {
      await classifyCard(card, signal);
    }
    lanes -= 1;
  };
  while (lanes < PARALLEL && waiting.length > 0) lane();
}

function retry(card) {
  enqueue([card]);
}

function classifyAll(files) {
  if (files.length === 0) return;
  const added = files.map((file) => new Card(file, retry));
  cards = [...added, ...cards];
  ui.results.prepend(...added.map((card) => card.node));
  enqueue(added);
}

function clearAll() {
  run.abort();
  run = new AbortController();
  waiting.length = 0;
  for (const card of cards) card.remove();
  cards = [];
  updateStatus();
}

let rerunTimer = null;

function rerunAll() {
  // A new k or model: every card is asked again (after a pause, not on each keystroke).
  clearTimeout(rerunTimer);
  rerunTimer = setTimeout(() => enqueue(cards), RERUN_DELAY_MS);
}

function listenForFiles() {
  ui.file.addEventListener("change", () => {
    const files = [...ui.file.files];
    ui.file.value = ""; // choosing the same file again still fires "change"
    classifyAll(files);
  });
  // Files dropped anywhere on the page count; without this the browser would open them.
  // Other drags (text into the API key field) are left to the browser.
  const carriesFiles = (event) => event.dataTransfer?.types.includes("Files");
  window.addEventListener("dragover", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    document.body.classList.add("dragging");
  });
  window.addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) document.body.classList.remove("dragging");
  });
  window.addEventListener("drop", (event) => {
    document.body.classList.remove("dragging");
    if (!carriesFiles(event)) return;
    event.preventDefault();
    classifyAll([...event.dataTransfer.files]);
  });
  document.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files ?? [])];
    if (files.length === 0) return; // plain text pastes (the API key field) stay untouched
    event.preventDefault();
    classifyAll(files);
  });
}

function listenForSettings() {
  ui.controls.addEventListener("submit", (event) => event.preventDefault());
  ui.topK.addEventListener("change", rerunAll);
  ui.model.addEventListener("change", rerunAll);
  ui.clear.addEventListener("click", clearAll);
  ui.apiKey.value = apiKey.get();
  ui.apiKey.addEventListener("change", () => {
    apiKey.set(ui.apiKey.value.trim());
    loadModels();
  });
}

listenForSettings();
listenForFiles();
loadModels();
