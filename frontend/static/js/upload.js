// Chunked, resumable upload of an algorithm image tarball (no dependencies).
//
// Protocol (backend/images/router.py): create an upload, PUT chunks with Content-Range,
// ask the server how much it holds after any error, then complete. The server is the
// source of truth for the offset, so a dropped connection, a reload of the page or a
// second tab all resume from what actually arrived.
(function () {
  "use strict";

  function csrfToken() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute("content") : "";
  }

  function fmtBytes(n) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }

  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  // One request with JSON in and out; rejects with {status, detail} or {network: true}.
  function request(method, url, body, headers, onProgress) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open(method, url, true);
      xhr.withCredentials = true;
      xhr.timeout = 120000;
      xhr.setRequestHeader("X-CSRF-Token", csrfToken());
      xhr.setRequestHeader("Accept", "application/json");
      Object.keys(headers || {}).forEach(function (k) { xhr.setRequestHeader(k, headers[k]); });
      if (onProgress && xhr.upload) {
        xhr.upload.onprogress = function (e) { if (e.lengthComputable) onProgress(e.loaded); };
      }
      xhr.onload = function () {
        var data = null;
        try { data = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch (e) { data = null; }
        if (xhr.status >= 200 && xhr.status < 300) resolve(data || {});
        else reject({ status: xhr.status, detail: detailOf(data, xhr), data: data });
      };
      xhr.onerror = function () { reject({ network: true, detail: "The connection dropped." }); };
      xhr.ontimeout = function () { reject({ network: true, detail: "The server did not answer in time." }); };
      xhr.onabort = function () { reject({ aborted: true, detail: "Upload paused." }); };
      if (body instanceof Blob) xhr.send(body);
      else if (body !== undefined && body !== null) {
        xhr.setRequestHeader("Content-Type", "application/json");
        xhr.send(JSON.stringify(body));
      } else xhr.send();
    });
  }

  function detailOf(data, xhr) {
    if (data && typeof data.detail === "string") return data.detail;
    if (data && Array.isArray(data.detail)) return data.detail.map(function (d) { return d.msg; }).join("; ");
    return "The server answered " + xhr.status + ".";
  }

  function fill(template, id) { return template.replace("{id}", encodeURIComponent(id)); }

  function Uploader(root) {
    this.root = root;
    this.cfg = {
      createUrl: root.dataset.createUrl,
      uploadUrl: root.dataset.uploadUrl, // "/api/images/uploads/{id}" (GET status, PUT chunk)
      completeUrl: root.dataset.completeUrl, // "/api/images/uploads/{id}/complete"
      chunkBytes: parseInt(root.dataset.chunkBytes || "8388608", 10),
      // Chunks grow (doubling) while one takes under fastMs, up to maxChunkBytes (or the
      // server's limit): on a fast link few requests, so their fixed cost stays small; on a
      // slow one a chunk stays well within the request timeout. The server keeps what
      // arrived of an interrupted chunk, so a large chunk loses nothing on a drop.
      maxChunkBytes: parseInt(root.dataset.maxChunkBytes || "134217728", 10),
      fastMs: 4000,
      slowMs: 40000,
      maxRetries: parseInt(root.dataset.maxRetries || "30", 10),
      // "dataset": an archive for a dataset import; completeUrl is then the dataset's imports
      // endpoint, which takes the finished upload (no image check).
      purpose: root.dataset.purpose || "image",
    };
    this.input = root.querySelector("input[type=file]");
    this.zone = root.querySelector(".dropzone");
    this.bar = root.querySelector(".progress > span");
    this.barBox = root.querySelector(".progress");
    this.text = root.querySelector("[data-role=status]");
    this.bytes = root.querySelector("[data-role=bytes]");
    this.result = root.querySelector("[data-role=result]");
    this.retryBtn = root.querySelector("[data-role=retry]");
    this.file = null;
    this.uploadId = null;
    this.offset = 0;
    this.busy = false;
    this.bind();
  }

  Uploader.prototype.bind = function () {
    var self = this;
    if (this.zone) {
      ["dragenter", "dragover"].forEach(function (ev) {
        self.zone.addEventListener(ev, function (e) { e.preventDefault(); self.zone.classList.add("dragover"); });
      });
      ["dragleave", "drop"].forEach(function (ev) {
        self.zone.addEventListener(ev, function (e) { e.preventDefault(); self.zone.classList.remove("dragover"); });
      });
      this.zone.addEventListener("drop", function (e) {
        if (e.dataTransfer && e.dataTransfer.files.length) self.start(e.dataTransfer.files[0]);
      });
      this.zone.addEventListener("click", function () { self.input.click(); });
      this.zone.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); self.input.click(); }
      });
    }
    this.input.addEventListener("change", function () {
      if (self.input.files.length) self.start(self.input.files[0]);
    });
    if (this.retryBtn) {
      this.retryBtn.addEventListener("click", function () { self.run(); });
    }
    window.addEventListener("online", function () {
      if (self.file && !self.busy && self.uploadId) self.run();
    });
  };

  Uploader.prototype.storageKey = function (f) {
    return "syntharena-upload:" + f.name + ":" + f.size + ":" + f.lastModified;
  };

  Uploader.prototype.limitChunk = function (serverMax) {
    if (serverMax && serverMax < this.cfg.maxChunkBytes) this.cfg.maxChunkBytes = serverMax;
    if (this.cfg.chunkBytes > this.cfg.maxChunkBytes) this.cfg.chunkBytes = this.cfg.maxChunkBytes;
  };

  // After a chunk of `sent` bytes took `ms`: only a full-size chunk says how fast the link is.
  Uploader.prototype.adaptChunk = function (ms, sent) {
    if (sent < this.cfg.chunkBytes) return;
    if (ms < this.cfg.fastMs) this.cfg.chunkBytes = Math.min(this.cfg.chunkBytes * 2, this.cfg.maxChunkBytes);
    else if (ms > this.cfg.slowMs) this.cfg.chunkBytes = Math.max(this.cfg.chunkBytes / 2, 1048576);
  };

  Uploader.prototype.setStatus = function (msg, kind) {
    this.text.textContent = msg;
    this.text.className = "status-text " + (kind || "");
  };

  Uploader.prototype.setProgress = function (done) {
    var total = this.file ? this.file.size : 0;
    var pct = total ? Math.min(100, (100 * done) / total) : 0;
    this.bar.style.width = pct.toFixed(1) + "%";
    this.barBox.setAttribute("aria-valuenow", pct.toFixed(0));
    this.bytes.textContent = fmtBytes(done) + " of " + fmtBytes(total) + " (" + pct.toFixed(0) + " %)";
  };

  Uploader.prototype.start = function (file) {
    if (this.busy) return;
    if (this.cfg.purpose === "dataset") {
      if (!/\.(tar|tar\.gz|tgz|zip)$/i.test(file.name)) {
        this.setStatus("“" + file.name + "” is not a dataset archive: pack the SynthRAD-layout " +
          "folder as .tar, .tar.gz, .tgz or .zip and drop that file here.", "error");
        return;
      }
    } else if (!/\.(tar|tar\.gz|tgz|tar\.xz|txz)$/i.test(file.name)) {
      this.setStatus(
        "“" + file.name + "” is not an image tarball. Export your algorithm with " +
        "`docker save my-algorithm:latest | gzip > my-algorithm.tar.gz` and drop that file here.", "error");
      return;
    }
    this.file = file;
    this.result.innerHTML = "";
    this.root.querySelector(".upload-status").hidden = false;
    this.uploadId = window.localStorage.getItem(this.storageKey(file));
    this.offset = 0;
    this.setProgress(0);
    this.run();
  };

  // Ask the server how much of this upload it holds; null when the upload is gone.
  Uploader.prototype.serverOffset = async function () {
    try {
      var st = await request("GET", fill(this.cfg.uploadUrl, this.uploadId));
      if (st.status && st.status !== "open") return null;
      this.limitChunk(st.max_chunk_bytes);
      return st.received_bytes || 0;
    } catch (err) {
      if (err.status === 404 || err.status === 410 || err.status === 403) return null;
      throw err;
    }
  };

  Uploader.prototype.run = async function () {
    if (this.busy || !this.file) return;
    this.busy = true;
    if (this.retryBtn) this.retryBtn.hidden = true;
    var file = this.file;
    var failures = 0;
    try {
      for (;;) {
        try {
          if (this.uploadId) {
            var off = await this.serverOffset();
            if (off === null) { this.uploadId = null; window.localStorage.removeItem(this.storageKey(file)); }
            else this.offset = off;
          }
          if (!this.uploadId) {
            this.setStatus("Starting upload of " + file.name + "…");
            var created = await request("POST", this.cfg.createUrl,
              { name: file.name, size_bytes: file.size, purpose: this.cfg.purpose });
            this.uploadId = created.id || created.upload_id;
            this.offset = created.received_bytes || 0;
            this.limitChunk(created.max_chunk_bytes);
            window.localStorage.setItem(this.storageKey(file), this.uploadId);
          }
          this.setProgress(this.offset);
          while (this.offset < file.size) {
            var end = Math.min(file.size, this.offset + this.cfg.chunkBytes);
            var self = this;
            var base = this.offset;
            this.setStatus((failures ? "Connection back — resuming at " + fmtBytes(base) + ". " : "") + "Uploading " + file.name + "…");
            var began = Date.now();
            var ans = await request("PUT", fill(this.cfg.uploadUrl, this.uploadId), file.slice(base, end), {
              "Content-Range": "bytes " + base + "-" + (end - 1) + "/" + file.size,
              "Content-Type": "application/octet-stream",
            }, function (loaded) { self.setProgress(base + loaded); });
            this.limitChunk(ans.max_chunk_bytes);
            this.adaptChunk(Date.now() - began, end - base);
            this.offset = typeof ans.received_bytes === "number" ? ans.received_bytes : end;
            this.setProgress(this.offset);
            failures = 0;
          }
          if (this.cfg.purpose === "dataset") {
            this.setStatus("Upload complete. Queuing the import…");
            var note = this.root.querySelector("input[name=note]");
            var job = await request("POST", this.cfg.completeUrl,
              { source: "archive", upload_id: this.uploadId, note: note ? note.value : "" });
            window.localStorage.removeItem(this.storageKey(file));
            this.setStatus("Import " + job.id + " queued; its progress shows on this page.", "ok");
            this.root.dispatchEvent(new CustomEvent("import:queued", { bubbles: true, detail: job }));
            window.setTimeout(function () { window.location.reload(); }, 1500);
            return;
          }
          this.setStatus("Upload complete. Checking the image (manifest, architecture, user, size)…");
          var image = await request("POST", fill(this.cfg.completeUrl, this.uploadId), {});
          window.localStorage.removeItem(this.storageKey(file));
          this.showResult(image);
          return;
        } catch (err) {
          if (err.network || err.status >= 500 || err.status === 409 || err.status === 416) {
            failures += 1;
            if (failures > this.cfg.maxRetries) throw err;
            var wait = Math.min(30, Math.pow(2, Math.min(failures - 1, 5)));
            this.setStatus(err.detail + " Retrying in " + wait + " s — the upload resumes where it stopped.", "warn");
            await sleep(wait * 1000);
            continue;
          }
          throw err;
        }
      }
    } catch (err) {
      if (err.network) {
        this.setStatus(err.detail + " Check your connection, then press “Resume upload”.", "error");
        if (this.retryBtn) this.retryBtn.hidden = false;
      } else {
        this.setStatus("The upload was refused: " + err.detail, "error");
      }
    } finally {
      this.busy = false;
    }
  };

  Uploader.prototype.showResult = function (image) {
    var img = image.image || image;
    var ok = img.status === "valid";
    var box = document.createElement("div");
    box.className = ok ? "flash ok" : img.status === "invalid" ? "flash error" : "flash info";
    var title = document.createElement("strong");
    title.textContent = ok
      ? "“" + (img.name || this.file.name) + "” is valid and ready to submit."
      : img.status === "invalid"
        ? "“" + (img.name || this.file.name) + "” cannot be used."
        : "“" + (img.name || this.file.name) + "” is being checked.";
    box.appendChild(title);
    if (img.notice) {
      var n = document.createElement("div");
      n.textContent = img.notice;
      box.appendChild(n);
    }
    if (img.validation_message) {
      var p = document.createElement("div");
      p.textContent = img.validation_message;
      box.appendChild(p);
    }
    this.result.innerHTML = "";
    this.result.appendChild(box);
    this.setStatus(ok ? "Done." : "Checked.", ok ? "ok" : "error");
    if (ok) {
      // Offer the new image in the submit form right away.
      var select = document.querySelector("select[name=image_id]");
      if (select) {
        // Drop the "Upload an image first" placeholder; a re-upload of known bytes picks
        // the image already listed instead of listing it twice.
        Array.prototype.slice.call(select.options).forEach(function (o) {
          if (o.value === "" || o.value === String(img.id)) o.remove();
        });
        var opt = document.createElement("option");
        opt.value = img.id;
        opt.textContent = (img.name || this.file.name) + " (just uploaded)";
        select.insertBefore(opt, select.firstChild);
        select.value = String(img.id);
        select.dispatchEvent(new Event("change"));
      }
      this.root.dispatchEvent(new CustomEvent("upload:valid", { bubbles: true, detail: img }));
    }
  };

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-uploader]").forEach(function (el) { el.uploader = new Uploader(el); });
  });
})();
