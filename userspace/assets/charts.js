// swoll's /metrics/charts: draws the Sankey that the agent computed and inlined in the page as
// JSON (#swoll-data: order, nodes with a unique name, a depth and the text to show, links by node
// name). Loaded after echarts.min.js, which the agent serves from its own binary.
//
// When the chart has been laid out and drawn, <body> gets data-chart="finished" (tests wait on it).
(function () {
  'use strict';
  var el = document.getElementById('sankey');
  var source = document.getElementById('swoll-data');
  if (!el || !source || typeof echarts === 'undefined') {
    return;
  }
  var data = JSON.parse(source.textContent);
  var esc = echarts.format.encodeHTML; // labels are user data: tooltips are HTML
  var number = new Intl.NumberFormat('en-US');
  var text = {};
  var perDepth = [];
  data.nodes.forEach(function (n) {
    text[n.name] = n.text;
    perDepth[n.depth] = (perDepth[n.depth] || 0) + 1;
  });
  var widest = Math.max.apply(null, perDepth.concat([1]));
  el.style.height = Math.max(480, Math.min(8000, widest * 18 + 60)) + 'px';

  var margin = { left: 8, right: 150, top: 30, bottom: 8 };
  var nodeWidth = 14;
  // One heading above each column: the level's name.
  function headings() {
    var n = data.order.length;
    var span = el.clientWidth - margin.left - margin.right - nodeWidth;
    return data.order.map(function (level, i) {
      return {
        type: 'text',
        left: margin.left + (n > 1 ? (i * span) / (n - 1) : 0),
        top: 6,
        style: { text: level, fill: '#616e7c', font: '600 12px sans-serif' }
      };
    });
  }

  var chart = echarts.init(el);
  chart.on('finished', function () {
    document.body.setAttribute('data-chart', 'finished');
  });
  chart.setOption({
    tooltip: {
      trigger: 'item',
      triggerOn: 'mousemove',
      formatter: function (p) {
        if (p.dataType === 'edge') {
          return esc(text[p.data.source]) + ' → ' + esc(text[p.data.target]) + '<br>' +
            number.format(p.data.value) + ' calls';
        }
        return esc(data.order[p.data.depth]) + ' <b>' + esc(p.data.text) + '</b><br>' +
          number.format(p.value) + ' calls';
      }
    },
    graphic: headings(),
    series: [{
      type: 'sankey',
      left: margin.left,
      right: margin.right,
      top: margin.top,
      bottom: margin.bottom,
      nodeWidth: nodeWidth,
      nodeGap: 6,
      draggable: false,
      emphasis: { focus: 'adjacency' },
      lineStyle: { color: 'gradient', curveness: 0.5, opacity: 0.3 },
      label: {
        fontSize: 11,
        formatter: function (p) {
          return p.data.text;
        }
      },
      data: data.nodes.map(function (n) {
        return { name: n.name, depth: n.depth, text: n.text };
      }),
      links: data.links
    }]
  });
  window.addEventListener('resize', function () {
    chart.resize();
    chart.setOption({ graphic: headings() });
  });
})();
