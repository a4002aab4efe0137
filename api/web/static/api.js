// The gateway's own /v1 API, as the page uses it. Every failure becomes an ApiError that
// carries the server's stable error code (or "network_error" when no answer came back).

const KEY_STORAGE = "resnet-serve.api-key";

export class ApiError extends Error {
  constructor({ code, message, status = 0, requestId = null, retryAfterS = null }) {
    super(message);
    this.code = code;
    this.status = status;
    this.requestId = requestId;
    this.retryAfterS = retryAfterS;
  }
}

/** The API key lives in sessionStorage only: gone when the tab closes. */
export const apiKey = {
  get: () => sessionStorage.getItem(KEY_STORAGE) ?? "",
  set(value) {
    if (value) sessionStorage.setItem(KEY_STORAGE, value);
    else sessionStorage.removeItem(KEY_STORAGE);
  },
};

async function request(path, init = {}) {
  const headers = new Headers(init.headers);
  const key = apiKey.get();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  let response;
  try {
    response = await fetch(path, { ...init, headers });
  } catch (cause) {
    if (cause.name === "AbortError") throw cause;
    throw new ApiError({ code: "network_error", message: String(cause) });
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw errorFrom(response, body);
  return body;
}

function errorFrom(response, body) {
  const detail = body?.error ?? {};
  const retryAfter = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
  return new ApiError({
    code: detail.code ?? `http_${response.status}`,
    message: detail.message ?? response.statusText,
    status: response.status,
    requestId: detail.request_id ?? response.headers.get("x-request-id"),
    retryAfterS: Number.isFinite(retryAfter) ? retryAfter : null,
  });
}

/** [{name, version, engine, precision, input_size}, ...] */
export function listModels() {
  return request("/v1/models");
}

/** The /v1/classify JSON for one file (sent as multipart, so the filename travels too). */
export function classify(file, { model, topK, signal }) {
  const params = new URLSearchParams({ top_k: String(topK) });
  if (model) params.set("model", model);
  const form = new FormData();
  form.append("file", file, file.name || "pasted image");
  return request(`/v1/classify?${params}`, { method: "POST", body: form, signal });
}
