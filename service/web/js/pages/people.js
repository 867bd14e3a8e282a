// People: the project's members (managers add, change and remove them), its classes
// (archive a used one, delete an unused one), and for admins every user, new users and
// one-time invite links. `renderInvite` is the page an invite link opens (#/invite/TOKEN).

import { get, parseTime, patch, post, put, request, rows } from "../api.js";
import { go, signedIn } from "../app.js";
import { clear, fmtTime, h, showError, toast } from "../ui.js";

const del = (path) => request("DELETE", path);
const PROJECT_ROLES = ["labeler", "reviewer", "manager"];
const ROLES = [...PROJECT_ROLES, "admin"];

const roleSelect = (id, value, roles = PROJECT_ROLES) => h("select", { id, testid: id },
  roles.map((r) => h("option", { value: r, selected: r === value }, r)));

export async function render(root, { project, user }) {
  root.append(h("h1", {}, "People"));
  const grid = h("div", { class: "settings" });
  root.append(grid);
  grid.append(membersCard(project), classesCard(project));
  if (user && user.role === "admin") grid.append(usersCard(), invitesCard());
}

function membersCard(project) {
  const tbody = h("tbody", { testid: "members" });
  const name = h("input", { id: "member-name", testid: "member-name", required: true, autocomplete: "off" });
  const role = roleSelect("member-role", "labeler");
  const form = h("form", { class: "form-grid" }, h("label", { for: "member-name" }, "User name"), name,
    h("label", { for: "member-role" }, "Role"), role,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", testid: "member-add" }, "Add or change")));

  async function load() {
    let list;
    try { list = await get(`/projects/${project.id}/members`); } catch (err) { showError(err); return; }
    clear(tbody, rows(list).map((m) => {
      const sel = roleSelect(`member-role-${m.user_id}`, m.role);
      sel.addEventListener("change", () => setRole(m.user_name, sel.value));
      return h("tr", { testid: `member-${m.user_name}` }, h("td", {}, m.user_name), h("td", {}, sel),
        h("td", {}, h("button", { type: "button", class: "link", testid: `member-remove-${m.user_name}`,
          onclick: () => remove(m) }, "Remove")));
    }));
  }
  async function setRole(userName, r) {
    try { await put(`/projects/${project.id}/members`, { user: userName, role: r }); toast(`${userName} is now ${r}`, "ok", 2000); } catch (err) { showError(err); }
    await load();
  }
  async function remove(m) {
    if (!window.confirm(`Remove ${m.user_name} from ${project.name}? Their labels stay.`)) return;
    try { await del(`/projects/${project.id}/members/${m.user_id}`); toast(`Removed ${m.user_name}`, "ok", 2000); } catch (err) { showError(err); }
    await load();
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!name.value.trim()) return;
    await setRole(name.value.trim(), role.value);
    name.value = "";
  });
  load();
  return h("section", { class: "card", "aria-labelledby": "members-title" }, h("h2", { id: "members-title" }, "Members"),
    h("p", { class: "muted small" }, "Labelers label; reviewers also send labels back and resolve flags; managers run the project."),
    h("table", { class: "results" }, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Role"), h("th", {}, ""))), tbody),
    form);
}

function classesCard(project) {
  const list = h("ul", { class: "small", testid: "class-list" });
  let classes = [...project.classes];

  async function reload() {
    try { classes = (await get(`/projects/${project.id}`)).classes; } catch (err) { showError(err); }
    draw();
  }
  function draw() {
    clear(list, [...classes].sort((a, b) => a.position - b.position).map((c) => h("li", { testid: `class-${c.name}` },
      h("strong", {}, c.name), c.archived ? h("span", { class: "badge" }, " archived") : null, " ",
      h("button", { type: "button", class: "link", testid: `class-archive-${c.name}`, onclick: () => archive(c, !c.archived) },
        c.archived ? "restore" : "archive"), " ",
      h("button", { type: "button", class: "link", testid: `class-delete-${c.name}`, onclick: () => remove(c) }, "delete"))));
  }
  async function archive(c, archived) {
    try {
      await patch(`/projects/${project.id}/classes/${c.id}`, { archived });
      toast(archived ? `${c.name} is archived: hidden from labelling, kept on its labels` : `${c.name} is back`, "ok");
    } catch (err) { showError(err); }
    await reload();
  }
  async function remove(c) {
    if (!window.confirm(`Delete the class ${c.name}?`)) return;
    try { await del(`/projects/${project.id}/classes/${c.id}`); toast(`Deleted ${c.name}`, "ok", 2000); } catch (err) {
      if (err.status === 409) toast(`${c.name} is used by labels: archive it instead.`, "error");
      else showError(err);
    }
    await reload();
  }
  draw();
  return h("section", { class: "card", "aria-labelledby": "classes-title" }, h("h2", { id: "classes-title" }, "Classes"),
    h("p", { class: "muted small" }, "A class that labels use cannot be deleted: archive it to hide it from labelling; its labels keep it."),
    list);
}

function usersCard() {
  const tbody = h("tbody", { testid: "users" });
  const name = h("input", { id: "user-name", testid: "user-name", required: true, autocomplete: "off" });
  const password = h("input", { id: "user-password", testid: "user-password", type: "password", minlength: 8, autocomplete: "new-password" });
  const role = roleSelect("user-role", "labeler", ROLES);
  const form = h("form", { class: "form-grid" }, h("label", { for: "user-name" }, "Name"), name,
    h("label", { for: "user-role" }, "Role"), role,
    h("label", { for: "user-password" }, "Password"), password,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", testid: "user-create" }, "Create user")));

  async function load() {
    let list;
    try { list = rows(await get("/users")); } catch (err) { showError(err); return; }
    clear(tbody, list.map((u) => {
      const sel = roleSelect(`user-role-${u.id}`, u.role, ROLES);
      sel.addEventListener("change", () => change(u, { role: sel.value }));
      const off = h("input", { type: "checkbox", checked: u.disabled, testid: `user-disabled-${u.name}`, "aria-label": `${u.name} disabled` });
      off.addEventListener("change", () => change(u, { disabled: off.checked }));
      return h("tr", { testid: `user-${u.name}` }, h("td", {}, u.name), h("td", {}, sel), h("td", {}, off),
        h("td", { class: "small muted" }, fmtTime(parseTime(u.created_at))));
    }));
  }
  async function change(u, body) {
    try { await patch(`/users/${u.id}`, body); toast(`Updated ${u.name}`, "ok", 2000); } catch (err) { showError(err); }
    await load();
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await post("/users", { name: name.value.trim(), role: role.value, password: password.value || null });
      toast(`Created ${name.value.trim()}`, "ok");
      name.value = ""; password.value = "";
    } catch (err) { showError(err); }
    await load();
  });
  load();
  return h("section", { class: "card", "aria-labelledby": "users-title" }, h("h2", { id: "users-title" }, "Users (admin)"),
    h("table", { class: "results" }, h("thead", {}, h("tr", {}, ["Name", "Role", "Disabled", "Created"].map((t) => h("th", {}, t)))), tbody),
    form);
}

function invitesCard() {
  const role = roleSelect("invite-role", "labeler", ROLES);
  const hours = h("input", { id: "invite-hours", testid: "invite-hours", type: "number", min: "1", max: "720", value: "72" });
  const out = h("div", { testid: "invite-link", role: "status", "aria-live": "polite" });
  const tbody = h("tbody", { testid: "invites" });
  const form = h("form", { class: "form-grid" }, h("label", { for: "invite-role" }, "Role"), role,
    h("label", { for: "invite-hours" }, "Valid for (hours)"), hours,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", testid: "invite-create" }, "Make invite link")));

  async function load() {
    let list;
    try { list = rows(await get("/invites")); } catch (err) { showError(err); return; }
    const now = new Date();
    clear(tbody, list.map((i) => {
      const expires = parseTime(i.expires_at);
      const state = i.used_at ? "used" : expires <= now ? "expired" : "open";
      return h("tr", { testid: `invite-${i.id}` }, h("td", {}, i.role), h("td", {}, state),
        h("td", { class: "small" }, fmtTime(expires)),
        h("td", {}, state === "open" ? h("button", { type: "button", class: "link", onclick: () => revoke(i) }, "Revoke") : ""));
    }));
  }
  async function revoke(i) {
    try { await del(`/invites/${i.id}`); } catch (err) { showError(err); }
    await load();
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const inv = await post("/invites", { role: role.value, ttl_hours: Number(hours.value) || 72 });
      const link = `${location.origin}${location.pathname}${inv.link.replace(/^\//, "")}`;
      const field = h("input", { readonly: true, value: link, testid: "invite-url", style: { width: "100%" } });
      clear(out, h("p", { class: "small" }, `Send this link to the new ${inv.role}; it works once, until ${fmtTime(parseTime(inv.expires_at))}:`),
        field, h("button", { type: "button", onclick: async () => {
          try { await navigator.clipboard.writeText(link); toast("Link copied", "ok", 1500); } catch { field.select(); }
        } }, "Copy"));
    } catch (err) { showError(err); }
    await load();
  });
  load();
  return h("section", { class: "card", "aria-labelledby": "invites-title" }, h("h2", { id: "invites-title" }, "Invite links (admin)"),
    form, out,
    h("table", { class: "results" }, h("thead", {}, h("tr", {}, ["Role", "State", "Expires", ""].map((t) => h("th", {}, t)))), tbody));
}

/** The page an invite link opens: pick a name and a password, then you are signed in. */
export async function renderInvite(root, { token }) {
  const name = h("input", { id: "invite-name", testid: "invite-name", required: true, autocomplete: "username" });
  const password = h("input", { id: "invite-password", testid: "invite-password", type: "password", minlength: 8,
    required: true, autocomplete: "new-password" });
  const error = h("p", { class: "form-error", role: "alert", testid: "invite-error" });
  const button = h("button", { type: "submit", class: "primary", testid: "invite-accept" }, "Create my account");
  const form = h("form", { class: "card login", "aria-labelledby": "invite-title" },
    h("h1", { id: "invite-title" }, "Join labelloop"),
    h("p", { class: "muted small" }, "Choose your name and a password (8 characters or more)."),
    h("label", { for: "invite-name" }, "Name"), name,
    h("label", { for: "invite-password" }, "Password"), password, error, button);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    button.disabled = true;
    try {
      await post(`/invites/${encodeURIComponent(token)}/accept`, { name: name.value.trim(), password: password.value }, { quiet401: true });
      const out = await post("/auth/login", { name: name.value.trim(), password: password.value }, { quiet401: true });
      await signedIn(out.user);
      go("#/");
    } catch (err) {
      error.textContent = err.status === 410 ? `${err.message}.` : err.message;
    } finally {
      button.disabled = false;
    }
  });
  root.append(form);
  name.focus();
}
