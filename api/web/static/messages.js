// Plain sentences for the server's stable error codes (shared/errors.py). The code itself
// is always shown beside the sentence, so an unknown code still tells the reader something.

const SENTENCES = {
  not_an_image: "This file is not an image the server can read.",
  unsupported_media_type: "This kind of file cannot be classified.",
  corrupt_image: "This image is damaged or cut short, so it cannot be read.",
  empty_body: "This file is empty.",
  payload_too_large: "This file is too large for the server.",
  too_many_pixels: "This image has too many pixels for the server.",
  too_many_files: "Too many files were sent at once.",
  queue_full: "The server is busy right now.",
  not_ready: "The server is still starting up.",
  deadline_exceeded: "The server took too long to answer.",
  unknown_model: "The server does not serve this model (any more).",
  invalid_parameter: "The server did not accept these settings.",
  unauthorized: "The server needs a valid API key.",
  forbidden: "This API key is not allowed to do that.",
  network_error: "The server could not be reached.",
};

const BY_STATUS = {
  401: SENTENCES.unauthorized,
  403: SENTENCES.forbidden,
  413: SENTENCES.payload_too_large,
  415: SENTENCES.unsupported_media_type,
  503: SENTENCES.queue_full,
  504: SENTENCES.deadline_exceeded,
};

/** One sentence for an ApiError, with a hint to retry when the server said when. */
export function sentenceFor(error) {
  let sentence =
    SENTENCES[error.code] ?? BY_STATUS[error.status] ?? "The server could not classify this.";
  if (error.retryAfterS) {
    const seconds = error.retryAfterS === 1 ? "1 second" : `${error.retryAfterS} seconds`;
    sentence += ` Try again in ${seconds}.`;
  }
  return sentence;
}
