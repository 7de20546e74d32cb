/* civflow: starts Swagger UI on /docs (service/web/templates/api_docs.html) from a static
   file, as the Content-Security-Policy allows no inline script. validatorUrl: null keeps
   Swagger UI from asking validator.swagger.io for a badge (no request leaves the server). */
window.addEventListener("load", function () {
  "use strict";
  var box = document.getElementById("swagger-ui-container");
  window.ui = window.SwaggerUIBundle({
    url: box.getAttribute("data-spec-url"),
    dom_id: "#swagger-ui-container",
    validatorUrl: null
  });
});
