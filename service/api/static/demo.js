// The demo page: one text in, one prediction out, through the same public API as any client.
//
// Three parts: `api` talks HTTP and measures the round trip, `view` writes the DOM (always with
// textContent, never HTML built from data), and the wiring at the bottom connects the form to both.

const CLIENT_TIMEOUT_MS = 15000; // the server answers within its own deadline (2 s by default); this covers a hung network

const $ = (id) => document.getElementById(id);

// When the service asks for API keys (401), the visitor pastes one; it stays in this tab only (sessionStorage)
// and travels as `Authorization: Bearer`, as any client's would.
const apiKey = {
  STORAGE: "sentiment-api-key",
  get: () => sessionStorage.getItem(apiKey.STORAGE) || "",
  set: (key) => (key ? sessionStorage.setItem(apiKey.STORAGE, key) : sessionStorage.removeItem(apiKey.STORAGE)),
  headers: () => (apiKey.get() ? { Authorization: `Bearer ${apiKey.get()}` } : {}),
};

const api = {
  /** GET a JSON document of the service; null when it cannot be read. */
  async getJson(path) {
    try {
      const response = await fetch(path, { headers: { Accept: "application/json", ...apiKey.headers() } });
      if (response.status === 401) view.askForKey("This service asks for an API key.");
      return response.ok ? await response.json() : null;
    } catch {
      return null;
    }
  },

  /**
   * POST /predict for one text. Resolves with what the service answered, error or not;
   * rejects only when no answer came (network failure, timeout, or a newer request took over).
   */
  async predict(text, explain, model, signal) {
    const started = performance.now();
    const request = { text };
    if (explain) request.explain = true;
    if (model) request.model = model;
    const response = await fetch("predict", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json", ...apiKey.headers() },
      body: JSON.stringify(request),
      signal,
    });
    let body = null;
    try {
      body = await response.json();
    } catch {
      // not JSON (a proxy's error page, say): described from the status alone
    }
    return {
      ok: response.ok,
      status: response.status,
      statusText: response.statusText,
      retryAfter: response.headers.get("Retry-After"),
      requestId: body?.request_id ?? response.headers.get("X-Request-ID"),
      body,
      ms: performance.now() - started,
    };
  },
};

const view = {
  model: null, // GET /model, once loaded: name, version, limits, metadata

  /** Show the key form, saying why (no key yet, or the key was refused). */
  askForKey(why) {
    $("key-form").hidden = false;
    $("key-why").textContent = why;
  },

  /** The models the service serves, in a picker (shown when there is more than one). */
  showModels(model, onPick) {
    const names = model?.models ?? [];
    const select = $("model-select");
    if (select.options.length === 0) {
      for (const name of names) select.append(new Option(name, name));
      select.addEventListener("change", () => onPick(select.value));
    }
    select.value = model?.name ?? "";
    $("model-row").hidden = names.length < 2;
  },

  /** Whether the model in view has more than two labels (one probability each, no threshold). */
  manyLabels() {
    return (this.model?.metadata?.labels?.length ?? 2) > 2;
  },

  showModel(model) {
    this.model = model;
    if (!model) {
      // the line's parts stay, so that a later answer (once a key is given, say) can fill them in
      $("model-extra").textContent = " · model information is unavailable (GET /model did not answer)";
      return;
    }
    $("model-extra").textContent = "";
    $("model-name").textContent = model.name;
    $("model-version").textContent = String(model.version);
    const test = model.metadata?.metrics_as_served?.test ?? model.metadata?.metrics?.test; // as served: long texts read by its policy
    if (typeof test?.accuracy === "number") {
      const on = typeof test.n === "number" ? ` on ${test.n.toLocaleString("en")} held-out test reviews` : " on held-out test data";
      $("model-extra").textContent = ` · accuracy ${test.accuracy.toFixed(3)}${on}`;
    }
    const threshold = model.metadata?.decision_threshold;
    if (typeof threshold === "number") $("bar-threshold").style.left = `${threshold * 100}%`;
  },

  showExamples(examples, onPick) {
    const list = $("examples");
    if (!Array.isArray(examples) || examples.length === 0) {
      list.closest("section").hidden = true;
      return;
    }
    for (const example of examples) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "example";
      button.textContent = example.name;
      button.addEventListener("click", () => onPick(example.text));
      const item = document.createElement("li");
      item.append(button);
      list.append(item);
    }
  },

  busy(isBusy) {
    $("placeholder").hidden = true;
    $("result").setAttribute("aria-busy", String(isBusy));
    $("classify").textContent = isBusy ? "Classifying…" : "Classify";
    if (isBusy) $("status").textContent = "Classifying…";
  },

  showPrediction(text, prediction, result) {
    $("error").replaceChildren();
    const score = prediction.score;
    const many = this.manyLabels();
    const scoreName = many ? `P(${prediction.label})` : "P(positive)";
    $("status").textContent = `${capitalise(prediction.label)}: ${scoreName} = ${score.toFixed(3)}${prediction.truncated ? ", truncated" : ""}.`;
    $("score-name").textContent = scoreName;
    $("bar").hidden = many; // one probability on a line from negative to positive: two labels only
    $("bar-scale").hidden = many;
    this.showScores(prediction.scores ?? {});
    const label = $("label");
    label.textContent = prediction.label;
    label.dataset.label = prediction.label;
    $("score").textContent = score.toFixed(3);
    $("score").dataset.score = String(score);
    $("bar").setAttribute("aria-valuenow", String(score));
    $("bar-fill").style.width = `${score * 100}%`;
    $("bar-fill").dataset.label = prediction.label;
    $("truncated-badge").hidden = !prediction.truncated;
    $("truncated-row").hidden = !prediction.truncated;
    $("truncated").textContent = prediction.truncated ? truncationNote(prediction.tokens, this.model) : "";
    $("tokens").textContent = String(prediction.tokens);
    $("windows").textContent = String(prediction.windows ?? 1);
    $("latency").textContent = `${Math.round(result.ms)} ms`;
    $("result-model").textContent = result.body.model ? `${result.body.model.name} v${result.body.model.version}` : "";
    $("request-id").textContent = result.requestId ?? "";
    this.showText(text, prediction);
    $("prediction").hidden = false;
    this.reveal();
  },

  /** One bar per label: its probability. */
  showScores(scores) {
    const rows = [];
    for (const [label, p] of Object.entries(scores)) {
      const item = document.createElement("li");
      const name = document.createElement("span");
      name.textContent = label;
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.setAttribute("role", "meter");
      bar.setAttribute("aria-label", `P(${label})`);
      bar.setAttribute("aria-valuemin", "0");
      bar.setAttribute("aria-valuemax", "1");
      bar.setAttribute("aria-valuenow", String(p));
      const fill = document.createElement("div");
      fill.className = "bar-fill";
      fill.dataset.label = label;
      fill.style.width = `${p * 100}%`;
      bar.append(fill);
      const value = document.createElement("span");
      value.textContent = p.toFixed(3);
      value.dataset.label = label;
      item.append(name, bar, value);
      rows.push(item);
    }
    $("scores").replaceChildren(...rows);
  },

  /**
   * The text that was classified. With an explanation (a signed weight per word, and where the word
   * is in the text), each word is a span tinted green (positive) or red (negative), as strongly as
   * its weight is large next to the text's largest; the text between words is kept as it was sent.
   */
  showText(text, prediction) {
    const box = $("classified-text");
    const tokens = prediction.explanation?.tokens;
    $("legend").hidden = !tokens;
    // A two-label model's weights push toward positive or negative; a k-label one's toward the label or away from it.
    $("legend-toward").textContent = this.manyLabels() ? prediction.label : "positive";
    $("legend-away").textContent = this.manyLabels() ? "away from it" : "toward negative";
    if (!tokens) {
      box.textContent = text;
      return;
    }
    const largest = Math.max(1e-9, ...tokens.filter((t) => t.read).map((t) => Math.abs(t.weight)));
    const pieces = [];
    let at = 0;
    for (const token of tokens) {
      if (token.start > at) pieces.push(document.createTextNode(text.slice(at, token.start)));
      const word = document.createElement("span");
      word.textContent = text.slice(token.start, token.end);
      word.tabIndex = 0;
      if (token.read) {
        word.className = `w ${token.weight >= 0 ? "pos" : "neg"}`;
        word.style.setProperty("--strength", (Math.abs(token.weight) / largest).toFixed(3));
        word.title = `${token.token}: ${token.weight >= 0 ? "+" : ""}${token.weight.toFixed(3)}`;
      } else {
        word.className = "w unread";
        word.title = `${token.token}: not read`;
      }
      word.dataset.weight = token.read ? String(token.weight) : "";
      pieces.push(word);
      at = token.end;
    }
    if (at < text.length) pieces.push(document.createTextNode(text.slice(at)));
    box.replaceChildren(...pieces);
  },

  /** An answer that is not a prediction, or no answer at all: what happened, in words. */
  showError(message, detail) {
    $("prediction").hidden = true;
    $("status").textContent = "No result.";
    const title = document.createElement("p");
    title.className = "error-message";
    title.id = "error-message";
    title.textContent = message;
    const more = document.createElement("p");
    more.className = "error-detail";
    more.id = "error-detail";
    more.textContent = detail;
    $("error").replaceChildren(title, more);
    this.reveal();
  },

  /** Scroll the result into sight if it is not (on a phone it starts below the fold); focus stays put. */
  reveal() {
    $("result").scrollIntoView({ block: "nearest" });
  },
};

function capitalise(word) {
  return word.charAt(0).toUpperCase() + word.slice(1);
}

function truncationNote(tokens, model) {
  const policy = model?.metadata?.long_texts;
  const tokenizer = model?.metadata?.tokenizer;
  if (policy?.kind === "windows") {
    const most = policy.window * policy.max_windows;
    return `yes: ${tokens} tokens; the model read the first ${Math.floor(most / 2)} and the last ${most - Math.floor(most / 2)}`;
  }
  if (!tokenizer) return `yes: the text has ${tokens} tokens, more than the model reads`;
  const tail = tokenizer.max_length - tokenizer.head_length;
  return `yes: ${tokens} tokens; the model read the first ${tokenizer.head_length} and the last ${tail}`;
}

/** The error of an answer that is not a 200, as [message, detail]. */
function describeFailure(result) {
  const error = result.body?.error;
  const status = `HTTP ${result.status}${result.statusText ? ` ${result.statusText}` : ""}`;
  const retry = result.retryAfter ? ` · retry after ${result.retryAfter} s` : "";
  const id = result.requestId ? ` · request id ${result.requestId}` : "";
  if (typeof error?.message === "string") return [error.message, `${status} · ${error.code}${retry}${id}`];
  return [`The service answered ${status} without an explanation.`, `${status}${retry}${id}`];
}

let inFlight = null; // AbortController of the request being waited for

async function classify(text) {
  inFlight?.abort();
  const controller = new AbortController();
  inFlight = controller;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, CLIENT_TIMEOUT_MS);
  view.busy(true);
  let result;
  try {
    result = await api.predict(text, $("explain").checked, view.model?.name, controller.signal);
  } catch (error) {
    if (controller !== inFlight) return; // a newer request replaced this one
    if (timedOut) view.showError(`No answer within ${CLIENT_TIMEOUT_MS / 1000} s.`, "The service or the network is too slow; try again.");
    else view.showError("Could not reach the service.", `No answer came (${error.message}). Check that the service is running.`);
    return;
  } finally {
    clearTimeout(timer);
    if (controller === inFlight) {
      inFlight = null;
      view.busy(false);
    }
  }
  const prediction = result.body?.predictions?.[0];
  if (result.status === 401) view.askForKey(apiKey.get() ? "The service refused this key." : "This service asks for an API key.");
  if (result.ok && prediction) view.showPrediction(text, prediction, result);
  else view.showError(...describeFailure(result));
}

const form = $("classify-form");
const textBox = $("text");

form.addEventListener("submit", (event) => {
  event.preventDefault();
  classify(textBox.value);
});

textBox.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    form.requestSubmit();
  }
});

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey.set($("api-key").value.trim());
  $("api-key").value = "";
  $("key-form").hidden = true;
  loadModel();
});

function loadModel(name) {
  api.getJson(name ? `model?model=${encodeURIComponent(name)}` : "model").then((model) => {
    view.showModel(model);
    view.showModels(model, loadModel);
  });
}

loadModel();
api.getJson($("examples").dataset.src).then((examples) =>
  view.showExamples(examples, (text) => {
    textBox.value = text;
    form.requestSubmit();
  }),
);
