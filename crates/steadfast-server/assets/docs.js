// The API reference at /docs: Swagger UI (vendored) over this server's own
// /openapi.json. The validator badge is off, so nothing leaves the server.
window.addEventListener("DOMContentLoaded", function () {
  "use strict";
  window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    validatorUrl: null,
    deepLinking: true,
    tryItOutEnabled: false,
  });
});
