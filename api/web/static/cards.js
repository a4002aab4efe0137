// One result card per image: preview, then a progress indicator, then either the top-k
// labels with score bars and the server's timings, or an error sentence with its code.

import { sentenceFor } from "./messages.js";

const percent = new Intl.NumberFormat(undefined, {
  style: "percent",
  minimumFractionDigits: 1,
  maximumFractionDigits: 1,
});
const millis = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
// Worth another try as they are: the server was busy, slow or out of reach.
const RETRIABLE = new Set([0, 429, 502, 503, 504]);

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

function placeholder() {
  return element("div", { class: "no-preview" }, "No preview");
}

function preview(file, name) {
  // Only files the browser calls images get an <img>: no broken-image icons for the rest.
  if (!file.type.startsWith("image/")) return { node: placeholder(), url: null };
  const url = URL.createObjectURL(file);
  const image = element("img", { src: url, alt: `Preview of ${name}`, decoding: "async" });
  image.addEventListener("error", () => image.replaceWith(placeholder()), { once: true });
  return { node: image, url };
}

export class Card {
  constructor(file, onRetry) {
    this.file = file;
    this.name = file.name || "pasted image";
    this.state = "new";
    const shown = preview(file, this.name);
    this.url = shown.url;
    this.body = element("div", { class: "outcome" });
    this.node = element(
      "li",
      { class: "card" },
      element("figure", {}, shown.node, element("figcaption", {}, this.name)),
      this.body,
    );
    this.onRetry = onRetry;
    this.attempts = 0;
  }

  /** A new request for this card; answers to older ones are ignored. */
  begin() {
    this.attempts += 1;
    return this.attempts;
  }

  current(attempt) {
    return attempt === this.attempts;
  }

  pending() {
    this.state = "pending";
    this.node.setAttribute("aria-busy", "true");
    this.node.classList.remove("failed");
    const bar = element("progress", { "aria-label": `Classifying ${this.name}` });
    this.body.replaceChildren(element("p", { class: "progress" }, bar, "Classifying…"));
  }

  result(response, roundTripMs, options) {
    this.state = "done";
    const rows = response.predictions.map((p) => {
      const fill = element("span", { class: "fill" });
      fill.style.width = `${(p.score * 100).toFixed(1)}%`; // CSSOM: allowed under the CSP
      return element(
        "li",
        {},
        element("span", { class: "label" }, p.label),
        element("span", { class: "score" }, percent.format(p.score)),
        element("span", { class: "bar", "aria-hidden": "true" }, fill),
      );
    });
    this.body.replaceChildren(
      element("ol", { class: "predictions", "aria-label": `Labels for ${this.name}` }, ...rows),
      timings(response, roundTripMs),
    );
    if (response.weights === "random") {
      const note = "Random weights: the model was not trained, so these labels mean nothing.";
      this.body.prepend(element("p", { class: "random-weights" }, note));
    }
    this.body.append(raw(this.name, response, options));
    this.node.removeAttribute("aria-busy");
  }

  error(error) {
    this.state = "failed";
    const message = element(
      "p",
      { class: "error" },
      `${sentenceFor(error)} `,
      element("span", { class: "code" }, "Error code: ", element("code", {}, error.code)),
    );
    this.body.replaceChildren(message);
    if (RETRIABLE.has(error.status)) {
      const label = `Try ${this.name} again`;
      const retry = element("button", { type: "button", "aria-label": label }, "Try again");
      retry.addEventListener("click", () => this.onRetry(this));
      this.body.append(retry);
    }
    this.node.classList.add("failed");
    this.node.removeAttribute("aria-busy");
  }

  remove() {
    if (this.url) URL.revokeObjectURL(this.url);
    this.node.remove();
  }
}

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

function timings(response, roundTripMs) {
  const t = response.timings;
  const measured = response.cached
    ? [["Batch", "cached answer"]]
    : [
        ["Inference", `${millis.format(t.inference_ms)} ms`],
        ["Queue", `${millis.format(t.queue_ms)} ms`],
        ["Decode", `${millis.format(t.decode_ms)} ms`],
        ["Batch", plural(response.batch_size, "image")],
      ];
  const entries = [
    ["Model", `${response.model} v${response.version}`],
    ["Server total", `${millis.format(t.total_ms)} ms`],
    ...measured,
    ["Round trip", `${millis.format(roundTripMs)} ms`],
  ];
  const items = entries.flatMap(([term, value]) => [
    element("dt", {}, term),
    element("dd", {}, value),
  ]);
  return element("dl", { class: "timings" }, ...items);
}

function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

/** The curl command that sends this image with the same settings. */
export function curlFor(name, { model, topK }) {
  const params = new URLSearchParams({ top_k: String(topK) });
  if (model) params.set("model", model);
  const url = `${window.location.origin}/v1/classify?${params}`;
  return `curl -F ${shellQuote(`file=@${name}`)} ${shellQuote(url)}`;
}

function copyButton(label, text) {
  const button = element("button", { type: "button", class: "copy" }, label);
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Select the text to copy it"; // clipboard refused (not https)
    }
    setTimeout(() => (button.textContent = label), 2000);
  });
  return button;
}

function raw(name, response, options) {
  const json = JSON.stringify(response, null, 2);
  const curl = curlFor(name, options);
  return element(
    "details",
    { class: "raw" },
    element("summary", {}, "JSON and curl"),
    element("pre", { class: "json" }, json),
    copyButton("Copy JSON", json),
    element("pre", { class: "curl" }, curl),
    copyButton("Copy curl", curl),
  );
}
