// Camera scanning on the organiser's check-in page (services/registration/templates/registration/admin_check_in.html),
// as progressive enhancement: the page's form already checks a ticket in by its typed code. Where the browser has
// the BarcodeDetector API with QR codes and a camera (a secure page: https or localhost), this adds a button that
// starts the rear camera, reads QR codes from it a few times a second, and puts the first code into the same form
// and sends it. Nothing else changes: the server answers exactly as for a typed code. No library, no CDN.
(function () {
  "use strict";

  function supported() {
    return "BarcodeDetector" in window && navigator.mediaDevices && navigator.mediaDevices.getUserMedia;
  }

  function start(scanner, form, input) {
    var button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    button.textContent = scanner.dataset.startLabel;
    scanner.appendChild(button);
    scanner.hidden = false;

    var video = null;
    var stream = null;
    var timer = null;
    var detector = null;

    function stop() {
      if (timer) { window.clearInterval(timer); timer = null; }
      if (stream) { stream.getTracks().forEach(function (track) { track.stop(); }); stream = null; }
      if (video) { video.remove(); video = null; }
      button.textContent = scanner.dataset.startLabel;
    }

    function found(code) {
      stop();
      input.value = code;
      form.submit();
    }

    function scan() {
      if (!video || video.readyState < 2) { return; }
      detector.detect(video).then(function (codes) {
        if (codes.length && codes[0].rawValue) { found(codes[0].rawValue); }
      }).catch(function () { /* a frame that cannot be read: try the next one */ });
    }

    button.addEventListener("click", function () {
      if (stream) { stop(); return; }
      window.BarcodeDetector.getSupportedFormats().then(function (formats) {
        if (formats.indexOf("qr_code") < 0) { throw new Error("no QR codes"); }
        detector = new window.BarcodeDetector({ formats: ["qr_code"] });
        return navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
      }).then(function (media) {
        stream = media;
        video = document.createElement("video");
        video.setAttribute("playsinline", "");
        video.muted = true;
        video.srcObject = stream;
        scanner.appendChild(video);
        button.textContent = scanner.dataset.stopLabel;
        return video.play();
      }).then(function () {
        timer = window.setInterval(scan, 250);
      }).catch(function () {
        stop();
        var note = document.createElement("p");
        note.className = "muted";
        note.setAttribute("role", "status");
        note.textContent = scanner.dataset.failedLabel;
        scanner.appendChild(note);
        button.remove();
      });
    });
    window.addEventListener("pagehide", stop);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var scanner = document.getElementById("scanner");
    var form = document.getElementById("check-in-form");
    var input = document.getElementById("check-in-code");
    if (scanner && form && input && supported()) { start(scanner, form, input); }
  });
})();
