"""NRI (containerd's Node Resource Interface): the wire that plugins and the runtime speak."""
