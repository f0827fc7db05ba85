// Progressive enhancement only: the dialogs work without JavaScript (the node checks every field).
// Changing the purpose or distribution reloads the dialog so its other fields follow the choice.
document.addEventListener("DOMContentLoaded", () => {
  for (const select of document.querySelectorAll("select[data-reload]")) {
    select.addEventListener("change", () => {
      const params = new URLSearchParams(window.location.search);
      params.set(select.name, select.value);
      if (select.name === "purpose") params.delete("distribution");
      window.location.search = params.toString();
    });
  }
});
