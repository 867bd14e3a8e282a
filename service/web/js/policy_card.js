// The Settings page's retraining-policy card: the policy's fields in groups, each with its
// default, one line of help and an inline range check; a reset to defaults; a live preview of
// what the calibration settings mean. The server judges every save and its sentences land
// under the fields they are about.

import { get, put } from "./api.js";
import { CHOICES, GROUPS, calibrationPreview, fieldOf, knownKeys, problem, show, useChoices } from "./policy.js";
import { h, toast } from "./ui.js";

const PREVIEW_KEYS = new Set(["target_precision", "delta", "calibration", "holdout_share", "holdout_min"]);

/** GET /policy/defaults -> {defaults, choices}; null when this server does not say (the marks stay hidden). */
async function loadDefaults() {
  try {
    const out = await get("/policy/defaults");
    if (out && typeof out === "object" && out.defaults) return { defaults: out.defaults, choices: out.choices || null };
    return out && typeof out === "object" ? { defaults: out, choices: null } : null;
  } catch {
    return null;
  }
}

function inputFor(key, type, value, empty) {
  const id = `pol-${key}`;
  let input;
  if (type === "choice") {
    const options = CHOICES[key].includes(value) ? CHOICES[key] : [...CHOICES[key], value]; // never show a value it is not
    input = h("select", { id }, options.map((t) => h("option", { value: t, selected: t === value }, t)));
  } else if (type === "bool") {
    input = h("input", { id, type: "checkbox", checked: Boolean(value) });
  } else if (type === "bool?") {
    input = h("select", { id }, [["auto", null], ["on", true], ["off", false]].map(([t, v]) =>
      h("option", { value: t, selected: v === value }, t)));
  } else if (type === "strategy") {
    input = h("input", { id, value: value ?? "", list: "pol-strategies", autocomplete: "off" });
  } else if (/^(int|float)\??$/.test(type)) {
    input = h("input", { id, type: "number", step: type.startsWith("int") ? "1" : "any", value: value ?? "",
      placeholder: type.endsWith("?") ? empty : "", inputmode: type.startsWith("int") ? "numeric" : "decimal" });
  } else {
    input = h("input", { id, value: typeof value === "object" && value !== null ? JSON.stringify(value) : value ?? "" });
  }
  input.dataset.testid = `policy-${key}`;
  return input;
}

/** What a field holds now: the value to send, or undefined for "keep the saved one" (an empty required number). */
function readField(input, type, old) {
  if (type === "bool") return input.checked;
  if (type === "bool?") return { auto: null, on: true, off: false }[input.value];
  if (/^(int|float)\??$/.test(type)) {
    if (input.validity && input.validity.badInput) return NaN;
    if (input.value.trim() === "") return type.endsWith("?") ? null : undefined;
    return Number(input.value);
  }
  if (type === "text" && typeof old === "object" && old !== null) {
    try { return JSON.parse(input.value); } catch { return old; }
  }
  return input.value;
}

function writeField(input, type, value) {
  if (type === "bool") input.checked = Boolean(value);
  else if (type === "bool?") input.value = value === null ? "auto" : value ? "on" : "off";
  else if (type === "text" && typeof value === "object" && value !== null) input.value = JSON.stringify(value);
  else input.value = value ?? "";
}

export async function policyCard(project) {
  const card = h("section", { class: "card policy-card", "aria-labelledby": "set-policy", testid: "settings-policy" },
    h("h2", { id: "set-policy" }, "Retraining policy"));
  let policy;
  try { policy = await get(`/projects/${project.id}/policy`); } catch (err) { card.append(h("p", { class: "notice error" }, err.message)); return card; }
  const server = await loadDefaults();
  if (server && server.choices) useChoices(server.choices);
  const defaults = server ? server.defaults : null;
  const fields = {}; // key -> {input, type, saved, error, mark}

  const groupsBox = h("div", { class: "policy-groups" });
  const form = h("form", { class: "policy-form", novalidate: true }, groupsBox);
  const preview = h("div", { class: "policy-preview", role: "status", "aria-live": "polite", testid: "policy-preview" });
  const groups = GROUPS.map(([gid, title, keys]) => [gid, title, keys.filter((k) => k in policy)]);
  const other = Object.keys(policy).filter((k) => !knownKeys().includes(k));
  if (other.length) groups.push(["other", "Other", other]);
  for (const [gid, title, keys] of groups) {
    const box = h("fieldset", { class: "policy-group", testid: `policy-group-${gid}` }, h("legend", {}, title));
    for (const key of keys) {
      const value = policy[key];
      const { label, type, help, empty } = fieldOf(key, value);
      const input = inputFor(key, type, value, empty);
      const id = input.id;
      const error = h("p", { id: `${id}-error`, class: "small form-error", role: "alert", testid: `policy-error-${key}`, hidden: true });
      const helpLine = h("p", { id: `${id}-help`, class: "small muted field-help", testid: `policy-help-${key}` }, help);
      input.setAttribute("aria-describedby", `${id}-help`);
      const mark = defaults && key in defaults
        ? h("span", { class: "default-mark small", testid: `policy-default-${key}` }, `default: ${show(key, defaults[key])}`) : null;
      fields[key] = { input, type, saved: value, error, mark };
      box.append(h("div", { class: "pol-field", testid: `policy-field-${key}` },
        h("label", { for: id }, label), h("div", { class: "pol-input" }, input, mark), helpLine, error));
      const onEdit = () => { check(key); if (PREVIEW_KEYS.has(key)) drawPreview(); };
      input.addEventListener("input", onEdit);
      input.addEventListener("change", onEdit);
    }
    if (gid === "sure") box.append(preview);
    groupsBox.append(box);
  }

  const setError = (key, text) => {
    const f = fields[key];
    f.error.textContent = text.replace(/_/g, " ");
    f.error.hidden = !text;
    if (text) f.input.setAttribute("aria-invalid", "true"); else f.input.removeAttribute("aria-invalid");
    f.input.setAttribute("aria-describedby", text ? `${f.input.id}-help ${f.error.id}` : `${f.input.id}-help`);
  };
  /** The inline check of one field (the server's rule, in the server's words); marks a value off its default. */
  function check(key) {
    const f = fields[key];
    const v = readField(f.input, f.type, f.saved);
    const text = v === undefined ? `${key} needs a value (empty keeps ${show(key, f.saved)})` : problem(key, v);
    setError(key, text);
    if (f.mark) f.mark.classList.toggle("changed", v !== undefined && JSON.stringify(v) !== JSON.stringify(defaults[key]));
    return text;
  }
  const value = (key) => {
    const f = fields[key];
    if (!f) return policy[key];
    const v = readField(f.input, f.type, f.saved);
    return v === undefined ? f.saved : v;
  };
  function drawPreview() {
    const lines = calibrationPreview({ target: value("target_precision"), delta: value("delta"),
      calibration: value("calibration"), holdoutShare: value("holdout_share"), holdoutMin: value("holdout_min"),
      nClasses: (project.classes || []).length || 2 });
    preview.replaceChildren(h("strong", {}, "What this means: "),
      ...(lines ? lines.map((l) => h("span", { class: "preview-line" }, l, " "))
        : [h("span", {}, "set a target and a δ strictly between 0 and 1 to see how many hold-out images prove them.")]));
  }

  /** The server's "invalid policy: NAME must be ..." sentences, each under its field; returns the rest. */
  const showProblems = (message) => {
    const text = String(message).replace(/^(invalid policy:\s*)+/i, "");
    const left = [];
    for (const p of text.split("; ")) {
      const key = (p.match(/^(\w+) /) || [])[1];
      if (fields[key]) setError(key, p); else left.push(p);
    }
    return left;
  };

  form.append(h("datalist", { id: "pol-strategies" }, CHOICES.strategy.map((s) => h("option", { value: s }))));
  const status = h("p", { class: "small", role: "status", testid: "policy-status" });
  const reset = defaults ? h("button", { type: "button", testid: "policy-reset", onclick: () => {
    for (const [key, f] of Object.entries(fields)) if (key in defaults) writeField(f.input, f.type, defaults[key]);
    for (const key of Object.keys(fields)) check(key);
    drawPreview();
    status.textContent = "Defaults filled in: Save policy to keep them.";
    status.className = "small";
  } }, "Reset to defaults") : null;
  form.append(h("div", { class: "actions policy-actions" },
    h("button", { type: "submit", class: "primary", testid: "policy-save" }, "Save policy"), reset), status);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const changes = {};
    for (const [key, f] of Object.entries(fields)) {
      const v = readField(f.input, f.type, f.saved);
      if (v !== undefined && JSON.stringify(v) !== JSON.stringify(f.saved)) changes[key] = Number.isNaN(v) ? f.input.value : v;
    }
    for (const key of Object.keys(fields)) setError(key, "");
    if (!Object.keys(changes).length) { status.textContent = "Nothing changed."; status.className = "small"; return; }
    try {
      const out = await put(`/projects/${project.id}/policy`, changes); // the server judges; its answer is kept
      for (const [key, f] of Object.entries(fields)) { f.saved = out[key]; writeField(f.input, f.type, out[key]); check(key); }
      status.textContent = `Saved: ${Object.keys(changes).join(", ")}.`;
      status.className = "small ok";
      toast("Policy saved", "ok");
    } catch (err) {
      const left = err.status === 422 ? showProblems(err.message) : [err.message];
      status.textContent = left.length ? `Not saved: ${left.join("; ")}` : "Not saved: see the note under the field.";
      status.className = "small form-error";
    }
  });
  drawPreview();
  for (const key of Object.keys(fields)) if (fields[key].mark) check(key);
  card.append(form);
  return card;
}
