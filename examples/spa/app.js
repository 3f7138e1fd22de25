// The whole SPA: in a real app the token comes from Clerk's SDK,
//   const token = await window.Clerk.session.getToken();
// here it is passed in the URL fragment, with the API's base URL:
//   index.html#api=http://127.0.0.1:8000&token=eyJ...
const params = new URLSearchParams(location.hash.slice(1));
const api = params.get("api") || "http://127.0.0.1:8000";
const token = params.get("token") || "";
const status = document.getElementById("status");

async function showMe() {
  let resp;
  try {
    resp = await fetch(`${api}/users/me`, { headers: { Authorization: `Bearer ${token}` } });
  } catch (err) {
    // A CORS refusal surfaces as a network error: the browser hides the response.
    status.dataset.state = "blocked";
    status.className = "error";
    status.textContent = `The browser refused the response (${err.name}): is this origin allowed?`;
    return;
  }
  if (!resp.ok) {
    const problem = await resp.json().catch(() => ({}));
    status.dataset.state = "error";
    status.className = "error";
    status.textContent = `${resp.status} ${problem.code || ""}: ${problem.detail || resp.statusText}`;
    return;
  }
  const user = await resp.json();
  document.getElementById("name").textContent =
    [user.first_name, user.last_name].filter(Boolean).join(" ") || user.username || "(no name)";
  document.getElementById("email").textContent = user.email || "(none)";
  document.getElementById("clerk-id").textContent = user.clerk_id;
  document.getElementById("id").textContent = user.id;
  if (user.image_url) document.getElementById("avatar").src = user.image_url;
  document.getElementById("user").hidden = false;
  status.dataset.state = "ok";
  status.textContent = "Signed in.";
}

showMe();
