// Settings (managers): project name and instructions, classes (add, rename,
// colour, hotkey order), the retraining policy, members and roles.

import { get, patch, post, request } from "../api.js";
import { policyCard } from "../policy_card.js";
import { classColor, clear, h, showError, toast } from "../ui.js";

export async function render(root, { project }) {
  const wrap = h("div", { class: "settings" });
  root.append(h("h1", {}, "Settings"), wrap);
  const [classes, members, policy] = await Promise.all([classesCard(project), membersCard(project), policyCard(project)]);
  wrap.append(projectCard(project), classes, members, policy); // the policy spans the width, below the three small cards
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
