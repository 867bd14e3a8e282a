// Sign-in: name + password -> session cookie (HttpOnly) + CSRF cookie.

import { post } from "../api.js";
import { go, signedIn } from "../app.js";
import { h } from "../ui.js";

export async function render(root) {
  const name = h("input", { id: "login-name", name: "name", autocomplete: "username", required: true,
    testid: "login-name" });
  const password = h("input", { id: "login-password", name: "password", type: "password",
    autocomplete: "current-password", required: true, testid: "login-password" });
  const error = h("p", { class: "form-error", role: "alert", testid: "login-error" });
  const button = h("button", { type: "submit", class: "primary", testid: "login-submit" }, "Sign in");
  const form = h("form", { class: "card login", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Sign in"),
    h("label", { for: "login-name" }, "Name"), name,
    h("label", { for: "login-password" }, "Password"), password,
    error, button);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    button.disabled = true;
    try {
      const out = await post("/auth/login", { name: name.value.trim(), password: password.value },
        { quiet401: true });
      await signedIn(out.user);
      const after = sessionStorage.getItem("labelloop.after");
      sessionStorage.removeItem("labelloop.after");
      go(after && !after.startsWith("#/login") ? after : "#/");
    } catch (err) {
      error.textContent = err.message;
      password.select();
    } finally {
      button.disabled = false;
    }
  });
  root.append(form);
  name.focus();
}
