// Starts Swagger UI on the API docs page (shared/templates/swagger_ui.html). A file, not an inline script,
// so that the suite's Content-Security-Policy allows scripts from the service itself only.
window.addEventListener("load", function () {
  var container = document.getElementById("swagger-ui-container");
  var config = { url: container.dataset.specUrl, dom_id: "#swagger-ui-container" };
  var overrides = JSON.parse(container.dataset.config || "{}");
  for (var name in overrides) {
    config[name] = overrides[name];
  }
  window.ui = SwaggerUIBundle(config);
});
