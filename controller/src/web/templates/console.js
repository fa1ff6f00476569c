// Upload with a progress bar: the only script of the console. The form posts to the JSON API directly.
document.querySelectorAll("form#upload").forEach(function (form) {
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var bar = form.querySelector("progress"), out = form.querySelector(".result");
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.dataset.action);
    xhr.setRequestHeader("X-CSRF-Token", document.querySelector("meta[name=csrf]").content);
    xhr.upload.onprogress = function (e) { if (e.lengthComputable) { bar.hidden = false; bar.value = 100 * e.loaded / e.total; } };
    xhr.onload = function () {
      var body = {}; try { body = JSON.parse(xhr.responseText); } catch (e) {}
      if (xhr.status >= 200 && xhr.status < 300) { window.location = "/bulletins/" + body.id; }
      else { out.textContent = body.error || xhr.statusText; bar.hidden = true; }
    };
    xhr.onerror = function () { out.textContent = "network error"; };
    xhr.send(new FormData(form));
  });
});
