// Project list, scoped to the caller's role; managers and admins can create a project.

import { get, post, rows } from "../api.js";
import { atLeast, go } from "../app.js";
import { h, showError } from "../ui.js";

const FIRST_TAB = { labeler: "label", reviewer: "review", manager: "dashboard", admin: "dashboard" };

export async function render(root, { user }) {
  const list = rows(await get("/projects"));
  root.append(h("h1", {}, "Projects"));
  if (!list.length) {
    root.append(h("p", { class: "muted", testid: "no-projects" },
      atLeast(user.role, "manager") ? "No projects yet: create one below."
        : "You are not a member of any project yet. Ask a manager to add you."));
  }
  const grid = h("ul", { class: "project-list", testid: "project-list" });
  for (const p of list) {
    const role = p.my_role || user.role;
    grid.append(h("li", { class: "card project", testid: `project-${p.id}` },
      h("h2", {}, h("a", { href: `#/project/${p.id}/${FIRST_TAB[role] || "label"}` }, p.name)),
      h("p", { class: "muted" }, `${p.task} · ${p.classes.length} classes · you are ${role}`),
      h("div", { class: "chips" }, p.classes.slice(0, 12).map((c) => h("span", { class: "chip" }, c.name))),
      h("div", { class: "actions" },
        h("a", { class: "button", href: `#/project/${p.id}/label`, testid: `open-label-${p.id}` }, "Label"),
        atLeast(role, "manager") &&
          h("a", { class: "button", href: `#/project/${p.id}/dashboard` }, "Dashboard"))));
  }
  root.append(grid);
  if (atLeast(user.role, "manager")) root.append(createForm());
}

function createForm() {
  const name = h("input", { id: "new-name", required: true, maxlength: "200", testid: "new-project-name" });
  const task = h("select", { id: "new-task", testid: "new-project-task" },
    ["multiclass", "multilabel", "detection", "segmentation"].map((t) => h("option", { value: t }, t)));
  const classes = h("input", { id: "new-classes", placeholder: "cat, dog, bird", testid: "new-project-classes" });
  const form = h("form", { class: "card form-grid", "aria-labelledby": "new-title" },
    h("h2", { id: "new-title" }, "New project"),
    h("label", { for: "new-name" }, "Name"), name,
    h("label", { for: "new-task" }, "Task"), task,
    h("label", { for: "new-classes" }, "Classes (comma separated)"), classes,
    h("div", { class: "actions" }, h("button", { class: "primary", type: "submit" }, "Create")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const p = await post("/projects", {
        name: name.value.trim(), task: task.value,
        classes: classes.value.split(",").map((c) => c.trim()).filter(Boolean),
      });
      go(`#/project/${p.id}/data`);
    } catch (err) { showError(err); }
  });
  return form;
}
