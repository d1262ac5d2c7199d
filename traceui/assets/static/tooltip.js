// Shows the hovered timeline element's <title> in a floating box that
// follows the pointer. The first hover moves the <title> text into
// data-tip (and aria-label), so that the browser's own tooltip does not
// show on top of this one.
(function () {
  "use strict";
  var tip = document.getElementById("tip");
  if (!tip) {
    return;
  }

  function hovered(ev) {
    var el = ev.target;
    return el && el.closest ? el.closest("svg.trace-timeline rect") : null;
  }

  function tipText(el) {
    if (el.dataset.tip === undefined) {
      var title = null;
      for (var c = el.firstElementChild; c; c = c.nextElementSibling) {
        if (c.localName === "title") {
          title = c;
          break;
        }
      }
      if (!title) {
        return "";
      }
      el.dataset.tip = title.textContent;
      el.setAttribute("aria-label", title.textContent);
      title.remove();
    }
    return el.dataset.tip;
  }

  function place(ev) {
    var pad = 14;
    var x = ev.clientX + pad;
    var y = ev.clientY + pad;
    if (x + tip.offsetWidth > window.innerWidth) {
      x = Math.max(0, ev.clientX - pad - tip.offsetWidth);
    }
    if (y + tip.offsetHeight > window.innerHeight) {
      y = Math.max(0, ev.clientY - pad - tip.offsetHeight);
    }
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }

  document.addEventListener("mouseover", function (ev) {
    var el = hovered(ev);
    var text = el ? tipText(el) : "";
    if (!text) {
      tip.hidden = true;
      return;
    }
    tip.textContent = text;
    tip.hidden = false;
    place(ev);
  });
  document.addEventListener("mousemove", function (ev) {
    if (!tip.hidden) {
      place(ev);
    }
  });
  document.documentElement.addEventListener("mouseleave", function () {
    tip.hidden = true;
  });
})();
