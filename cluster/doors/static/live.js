// Live updates of the lab dashboard (server-sent events); the page itself works without JavaScript.
document.addEventListener("DOMContentLoaded", () => {
  const feed = document.getElementById("feed");
  const root = document.body.dataset.root || "";
  if (!feed || !window.EventSource) return;
  const source = new EventSource(root + "/events");
  source.addEventListener("history", (e) => {
    const line = document.createElement("div");
    line.textContent = e.data;  // text, never HTML: events carry certificate names
    feed.prepend(line);
    while (feed.childElementCount > 300) feed.lastElementChild.remove();
  });
  let pending = null;
  const refresh = async () => {
    pending = null;
    const answer = await fetch(root + "/fragment", { credentials: "same-origin" });
    if (!answer.ok) return;
    const html = await answer.text();
    const holder = document.getElementById("live");
    if (holder) holder.innerHTML = html;  // rendered and escaped by the server's templates
  };
  source.addEventListener("changed", () => { if (!pending) pending = setTimeout(refresh, 300); });
});
