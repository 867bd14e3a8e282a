// Settings (managers): project name and instructions, classes (add, rename,
// colour, hotkey order), the retraining policy, members and roles.

import { get, patch, post, put, request } from "../api.js";
import { classColor, clear, h, showError, toast } from "../ui.js";

// What the policy fields mean; unknown fields still get a plain input.
const POLICY = {
  min_labels_per_class: ["Labels per class before training", "int", "At least two classes need this many human labels."],
  retrain_every_labels: ["Retrain every N new labels", "int?", "Empty switches this trigger off."],
  retrain_every_minutes: ["Retrain every T minutes", "float?", "Empty switches this trigger off."],
  algorithm: ["Algorithm", ["fast", "precise"], "fast: a head on cached embeddings (seconds); precise: fine-tunes the backbone."],
  target_precision: ["Target pre-label precision", "float", "Between 0 and 1, e.g. 0.95."],
  delta: ["Risk δ (1 − confidence)", "float", "The threshold's precision holds with probability 1 − δ."],
  holdout_share: ["Hold-out share", "float", "Share of labels drawn at random for calibration."],
  holdout_min: ["Hold-out labels to reach early", "int", "The first this many hold-out labels are drawn sooner: 30% of draws instead of 20% until they calibrate, then none until 20% of the labels would have made them. A small hold-out can rarely prove a threshold. 0: the plain share throughout."],
  strategy: ["Query strategy", "strategy", "How the queue picks the next image."],
  auto_accept: ["Auto-accept confident pre-labels", "bool", "Skip Pending for proposals above the threshold (audited)."],
  audit_share: ["Audit share", "float", "Share of auto-accepted pre-labels sent back to people."],
  batch_size: ["Query batch size", "int", "Items a query round selects."],
  calibration: ["Calibration", ["per_class", "pooled"], "per_class: a certified threshold per class; pooled: one for all classes (needs fewer hold-out labels)."],
  epochs: ["Epochs (precise)", "int", "Training passes over the labels."],
  semi_supervised: ["Learn from unlabelled images", "bool?", "auto: on for fast (labels weighted to the class mix of the unlabelled images, plus pseudo-labels), off for precise (FixMatch-style pseudo-labels, slower)."],
  image_size: ["Model input size", "int?", "Empty: the backbone's default."],
  features: ["Image features", ["stages", "final"], "stages: the backbone's top features and three stages below them (better on images unlike ImageNet); final: the top features only."],
  mirror: ["Mirror images are the same class", "bool", "On: the model sees each image and its left-right mirror image as one (better scores). Off when classes differ by the way they face (left/right arrows)."],
  grid_min_confidence: ["Grid pages: lowest model confidence", "float", "Images the model is less sure of are labelled one by one."],
  grid_purity: ["Grid pages: expected purity", "float?", "Pages take the images most likely right until this share is expected in the page's class (learnt from the hold-out). Empty switches it off."],
};
const STRATEGIES = ["margin", "entropy", "least_confidence", "margin_diverse", "entropy_diverse", "margin_balanced", "margin_explore",
  "multilabel_uncertainty", "multilabel_entropy", "cold_start", "random"];

export async function render(root, { project }) {
  const wrap = h("div", { class: "settings" });
  root.append(h("h1", {}, "Settings"), wrap);
  wrap.append(projectCard(project), await classesCard(project), await policyCard(project), await membersCard(project));
}

function projectCard(project) {
  const name = h("input", { id: "set-name", value: project.name, required: true, testid: "settings-name" });
  const instr = h("textarea", { id: "set-instr", testid: "settings-instructions" }, project.instructions || "");
  const form = h("form", { class: "card", "aria-labelledby": "set-project" },
    h("h2", { id: "set-project" }, "Project"),
    h("label", { for: "set-name" }, "Name"), h("div", {}, name),
    h("label", { for: "set-instr" }, "Instructions for labelers"), instr,
    h("p", { class: "muted small" }, `Task: ${project.task} (fixed at creation).`),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", testid: "settings-save-project" }, "Save")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const out = await patch(`/projects/${project.id}`, { name: name.value.trim(), instructions: instr.value });
      Object.assign(project, out);
      toast("Project saved", "ok");
    } catch (err) { showError(err); }
  });
  return form;
}

async function classesCard(project) {
  const card = h("section", { class: "card", "aria-labelledby": "set-classes", testid: "settings-classes" });
  const list = h("div");
  let seq = 0;
  const reload = async () => { // only the newest answer is drawn (saves may overlap)
    const mine = ++seq;
    const p = await get(`/projects/${project.id}`);
    if (mine !== seq) return;
    project.classes = p.classes;
    draw();
  };
  const save = async (c, changes) => {
    try { await patch(`/projects/${project.id}/classes/${c.id}`, changes); toast("Class saved", "ok", 1500); } catch (err) { showError(err); }
    await reload();
  };
  function draw() {
    const classes = [...project.classes].sort((a, b) => a.position - b.position);
    clear(list, classes.map((c, i) => {
      const name = h("input", { value: c.name, "aria-label": `Name of class ${i + 1}`, testid: `class-name-${i + 1}` });
      name.addEventListener("change", () => { if (name.value.trim() && name.value.trim() !== c.name) save(c, { name: name.value.trim() }); });
      const color = h("input", { type: "color", value: toHex(classColor(c, i)), "aria-label": `Colour of ${c.name}` });
      color.addEventListener("change", () => save(c, { color: color.value }));
      return h("div", { class: "class-row", testid: `class-row-${i + 1}` },
        h("kbd", { title: i < 9 ? `hotkey ${i + 1}` : "no hotkey" }, i < 9 ? String(i + 1) : "–"), name, color,
        h("div", { class: "actions", style: { margin: 0 } },
          h("button", { type: "button", class: "icon", "aria-label": `Move ${c.name} up`, disabled: i === 0, testid: `class-up-${i + 1}`,
            onclick: () => save(c, { position: i - 1 }) }, "↑"),
          h("button", { type: "button", class: "icon", "aria-label": `Move ${c.name} down`, disabled: i === classes.length - 1,
            onclick: () => save(c, { position: i + 1 }) }, "↓")));
    }));
  }
  const newName = h("input", { id: "set-new-class", placeholder: "new class", testid: "settings-new-class" });
  const add = h("form", { class: "actions" }, h("label", { for: "set-new-class", class: "sr-only" }, "New class"), newName,
    h("button", { type: "submit", testid: "settings-add-class" }, "Add class"));
  add.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!newName.value.trim()) return;
    try { await post(`/projects/${project.id}/classes`, { name: newName.value.trim() }); newName.value = ""; } catch (err) { showError(err); }
    await reload();
  });
  card.append(h("h2", { id: "set-classes" }, "Classes"),
    h("p", { class: "muted small" }, "The first nine are keys 1-9 on the Label page. Renaming keeps every label."), list, add);
  draw();
  return card;
}

function toHex(color) {
  if (/^#[0-9a-f]{6}$/i.test(color)) return color;
  return "#888888";
}

async function policyCard(project) {
  const card = h("section", { class: "card", "aria-labelledby": "set-policy", testid: "settings-policy" },
    h("h2", { id: "set-policy" }, "Retraining policy"));
  let policy;
  try { policy = await get(`/projects/${project.id}/policy`); } catch (err) { card.append(h("p", { class: "notice error" }, err.message)); return card; }
  const form = h("form", { class: "policy-form" });
  const inputs = {};
  for (const [key, value] of Object.entries(policy)) {
    const [label, type, help] = POLICY[key] || [key.replace(/_/g, " "), typeof value === "boolean" ? "bool"
      : typeof value === "number" ? (Number.isInteger(value) ? "int" : "float") : value === null ? "float?" : "text", ""];
    const id = `pol-${key}`;
    let input;
    if (Array.isArray(type)) {
      input = h("select", { id }, type.map((t) => h("option", { value: t, selected: t === value }, t)));
    } else if (type === "bool") {
      input = h("input", { id, type: "checkbox", checked: Boolean(value) });
    } else if (type === "bool?") {
      input = h("select", { id }, [["auto", null], ["on", true], ["off", false]].map(([t, v]) =>
        h("option", { value: t, selected: v === value }, t)));
    } else if (type === "strategy") {
      input = h("input", { id, value: value ?? "", list: "pol-strategies" });
    } else if (type === "int" || type === "int?" || type === "float" || type === "float?") {
      input = h("input", { id, type: "number", step: type.startsWith("int") ? "1" : "any", value: value ?? "",
        placeholder: type.endsWith("?") ? "off" : "" });
    } else {
      input = h("input", { id, value: typeof value === "object" && value !== null ? JSON.stringify(value) : value ?? "" });
    }
    input.dataset.testid = `policy-${key}`;
    const error = h("p", { id: `${id}-error`, class: "small form-error", role: "alert", testid: `policy-error-${key}`,
      style: { gridColumn: "1 / -1", display: "none" } });
    inputs[key] = [input, type, value, error];
    form.append(h("label", { for: id, title: help }, label), input, error);
  }
  /** The server's "invalid policy: NAME must be ..." sentences, each under its field. */
  const showProblems = (message) => {
    const text = String(message).replace(/^(invalid policy:\s*)+/i, "");
    const left = [];
    for (const problem of text.split("; ")) {
      const key = (problem.match(/^(\w+) /) || [])[1];
      const field = inputs[key];
      if (!field) { left.push(problem); continue; }
      const [input, , , error] = field;
      error.textContent = problem.replace(/_/g, " ");
      error.style.display = "";
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", error.id);
    }
    return left;
  };
  const clearProblems = () => {
    for (const [input, , , error] of Object.values(inputs)) {
      error.textContent = "";
      error.style.display = "none";
      input.removeAttribute("aria-invalid");
      input.removeAttribute("aria-describedby");
    }
  };
  form.append(h("datalist", { id: "pol-strategies" }, STRATEGIES.map((s) => h("option", { value: s }))));
  const status = h("p", { class: "small", role: "status", testid: "policy-status" });
  form.append(h("div", { class: "actions", style: { gridColumn: "1 / -1" } },
    h("button", { type: "submit", class: "primary", testid: "policy-save" }, "Save policy")), status);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const changes = {};
    for (const [key, [input, type, old]] of Object.entries(inputs)) {
      let v;
      if (type === "bool") v = input.checked;
      else if (type === "bool?") v = { auto: null, on: true, off: false }[input.value];
      else if (type === "int" || type === "int?" || type === "float" || type === "float?") {
        v = input.value === "" ? (type.endsWith("?") ? null : old) : Number(input.value);
      } else if (typeof old === "object" && old !== null) {
        try { v = JSON.parse(input.value); } catch { v = old; }
      } else v = input.value;
      if (JSON.stringify(v) !== JSON.stringify(old)) changes[key] = v;
    }
    clearProblems();
    if (!Object.keys(changes).length) { status.textContent = "Nothing changed."; status.className = "small"; return; }
    try {
      const out = await put(`/projects/${project.id}/policy`, changes);
      for (const [key, [, , ]] of Object.entries(inputs)) inputs[key][2] = out[key];
      status.textContent = `Saved: ${Object.keys(changes).join(", ")}.`;
      status.className = "small ok";
      toast("Policy saved", "ok");
    } catch (err) {
      const left = err.status === 422 ? showProblems(err.message) : [err.message];
      status.textContent = left.length ? `Not saved: ${left.join("; ")}` : "Not saved: see the note under the field.";
      status.className = "small form-error";
    }
  });
  card.append(form);
  return card;
}

async function membersCard(project) {
  const card = h("section", { class: "card", "aria-labelledby": "set-members", testid: "settings-members" },
    h("h2", { id: "set-members" }, "Members"));
  const tbody = h("tbody");
  const roles = ["labeler", "reviewer", "manager"];
  const load = async () => {
    let members;
    try { members = await get(`/projects/${project.id}/members`); } catch (err) { clear(tbody, h("tr", {}, h("td", {}, err.message))); return; }
    clear(tbody, members.map((m) => {
      const sel = h("select", { "aria-label": `Role of ${m.user_name}`, testid: `member-role-${m.user_name}` },
        roles.map((r) => h("option", { value: r, selected: r === m.role }, r)));
      sel.addEventListener("change", () => setRole(m.user_name, sel.value));
      return h("tr", {}, h("td", {}, m.user_name), h("td", {}, sel));
    }));
  };
  const setRole = async (user, role) => {
    try { await request("PUT", `/projects/${project.id}/members`, { json: { user, role } }); toast(`${user} is now ${role}`, "ok"); } catch (err) { showError(err); }
    await load();
  };
  const who = h("input", { id: "set-member-name", placeholder: "user name", required: true, testid: "member-name" });
  const role = h("select", { id: "set-member-role", "aria-label": "Role", testid: "member-role" }, roles.map((r) => h("option", { value: r }, r)));
  const add = h("form", { class: "actions" }, h("label", { for: "set-member-name", class: "sr-only" }, "User name"), who, role,
    h("button", { type: "submit", testid: "member-add" }, "Add or change"));
  add.addEventListener("submit", async (ev) => { ev.preventDefault(); await setRole(who.value.trim(), role.value); who.value = ""; });
  card.append(h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "User"), h("th", {}, "Role"))), tbody), add);
  await load();
  return card;
}
