(function () {
  if (typeof window.Plotly !== "undefined") return;
  var box = document.getElementById("plotly-missing");
  var src = new URL(box.dataset.src, document.baseURI);
  var here = decodeURIComponent(new URL(".", location.href).pathname).replace(/\/$/, "");
  var page = decodeURIComponent(location.pathname);
  box.querySelector(".missing-path").textContent = decodeURIComponent(src.pathname);
  box.querySelector(".rerender").textContent = box.dataset.rerender.replace("{dir}", here).replace("{page}", page);
  box.hidden = false;
})();
