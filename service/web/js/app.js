// The shell: who is signed in, hash routing (#/project/3/label), the project tabs.

import { ApiError, get, request } from "./api.js";
import { clear, errorBlock, h, showError } from "./ui.js";

const ROLE_RANK = { labeler: 1, reviewer: 2, manager: 3, admin: 4 };
export const atLeast = (role, need) => (ROLE_RANK[role] || 0) >= ROLE_RANK[need];

// tab -> [label, minimum project role, module]
const TABS = {
  label: ["Label", "labeler", "./pages/label.js"],
  pending: ["Pending", "labeler", "./pages/pending.js"],
  grids: ["Grids", "labeler", "./pages/grids.js"],
  review: ["Review", "reviewer", "./pages/review.js"],
  dashboard: ["Dashboard", "manager", "./pages/dashboard.js"],
  browse: ["Data", "manager", "./pages/data.js"],
  data: ["Import / export", "manager", "./pages/transfer.js"],
  people: ["People", "manager", "./pages/people.js"],
  settings: ["Settings", "manager", "./pages/settings.js"],
};

const state = { user: null, cleanup: null, seq: 0 };
const view = document.getElementById("view");
const userBox = document.getElementById("user-box");
const tabsNav = document.getElementById("tabs");
const crumbs = document.getElementById("crumbs");

export function currentUser() { return state.user; }

export function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function parse() {
  const parts = location.hash.replace(/^#\/?/, "").split("?")[0].split("/").filter(Boolean);
  if (parts[0] === "login") return { page: "login" };
  if (parts[0] === "invite" && parts[1]) return { page: "invite", token: parts[1] };
  if (parts[0] === "project" && parts[1]) {
    return { page: "project", projectId: Number(parts[1]), tab: parts[2] || "" };
  }
  return { page: "projects" };
}

async function loadUser() {
  try {
    state.user = await get("/auth/me", { quiet401: true });
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401) throw err;
    state.user = null;
  }
  renderUserBox();
  return state.user;
}

function renderUserBox() {
  if (!state.user) { clear(userBox); return; }
  clear(userBox,
    h("span", { class: "who", testid: "whoami" }, `${state.user.name} · ${state.user.role}`),
    h("button", { class: "link", type: "button", testid: "logout", onclick: logout }, "Sign out"));
}

async function logout() {
  try { await request("POST", "/auth/logout"); } catch (err) { if (err.status !== 401) showError(err); }
  state.user = null;
  renderUserBox();
  go("#/login");
}

export async function signedIn(user) {
  state.user = user;
  renderUserBox();
}

async function route() {
  const seq = ++state.seq;
  if (state.cleanup) {
    try { state.cleanup(); } catch (err) { console.error(err); }
    state.cleanup = null;
  }
  const r = parse();
  if (!state.user && r.page !== "login" && r.page !== "invite") {
    const u = await loadUser().catch((err) => { clear(view, errorBlock(err)); return undefined; });
    if (u === undefined) return;
    if (!u) {
      sessionStorage.setItem("labelloop.after", location.hash || "#/");
      go("#/login");
      return;
    }
  }
  clear(tabsNav);
  clear(crumbs, h("a", { href: "#/" }, "Projects"));
  clear(view, h("p", { class: "muted" }, "Loading…"));
  try {
    if (r.page === "login") {
      const mod = await import("./pages/login.js");
      await mount(seq, mod, {});
    } else if (r.page === "invite") {
      const mod = await import("./pages/people.js");
      await mount(seq, { render: mod.renderInvite }, { token: r.token });
    } else if (r.page === "projects") {
      const mod = await import("./pages/projects.js");
      await mount(seq, mod, { user: state.user });
    } else {
      const project = await get(`/projects/${r.projectId}`);
      if (seq !== state.seq) return;
      const role = project.my_role || state.user.role;
      const allowed = Object.keys(TABS).filter((t) => atLeast(role, TABS[t][1]));
      const tab = allowed.includes(r.tab) ? r.tab : allowed[0];
      if (tab !== r.tab) { location.replace(`#/project/${project.id}/${tab}`); return; }
      document.title = `${TABS[tab][0]} · ${project.name} · labelloop`;
      crumbs.append(" / ", h("span", { testid: "project-name" }, project.name));
      for (const t of allowed) {
        tabsNav.append(h("a", { href: `#/project/${project.id}/${t}`, class: t === tab ? "active" : "",
          "aria-current": t === tab ? "page" : false, testid: `tab-${t}` }, TABS[t][0]));
      }
      const mod = await import(TABS[tab][2]);
      await mount(seq, mod, { user: state.user, project, role });
    }
  } catch (err) {
    if (seq !== state.seq) return;
    if (err instanceof ApiError && err.status === 401) return;
    clear(view, errorBlock(err));
  }
}

async function mount(seq, mod, ctx) {
  if (seq !== state.seq) return;
  const root = h("section", { class: "page" });
  clear(view, root);
  const cleanup = await mod.render(root, ctx);
  if (seq !== state.seq) { if (typeof cleanup === "function") cleanup(); return; }
  state.cleanup = typeof cleanup === "function" ? cleanup : null;
}

window.addEventListener("labelloop:unauthorized", () => {
  if (["login", "invite"].includes(parse().page)) return;
  state.user = null;
  renderUserBox();
  sessionStorage.setItem("labelloop.after", location.hash || "#/");
  go("#/login");
});
window.addEventListener("hashchange", route);
route();
