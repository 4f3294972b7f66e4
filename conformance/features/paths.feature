Feature: Path rules
  Every row of the Kubernetes documentation's path matching examples, plus
  ImplementationSpecific (treated as Prefix) and query strings (never matched).
  Requests no rule matches go to the Ingress's default backend.

  Background:
    Given a new random namespace
    Given an Ingress resource
    """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: paths
    spec:
      defaultBackend:
        service: {name: default-svc, port: {number: 8080}}
      rules:
        - host: root.paths.test
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: root, port: {number: 8080}}}}
        - host: exact.paths.test
          http:
            paths:
              - {path: /foo, pathType: Exact, backend: {service: {name: foo-exact, port: {number: 8080}}}}
        - host: exact-slash.paths.test
          http:
            paths:
              - {path: /foo/, pathType: Exact, backend: {service: {name: foo-slash-exact, port: {number: 8080}}}}
        - host: prefix.paths.test
          http:
            paths:
              - {path: /foo, pathType: Prefix, backend: {service: {name: foo-prefix, port: {number: 8080}}}}
        - host: prefix-slash.paths.test
          http:
            paths:
              - {path: /foo/, pathType: Prefix, backend: {service: {name: foo-slash-prefix, port: {number: 8080}}}}
        - host: elements.paths.test
          http:
            paths:
              - {path: /aaa/bb, pathType: Prefix, backend: {service: {name: aaa-bb, port: {number: 8080}}}}
        - host: subpath.paths.test
          http:
            paths:
              - {path: /aaa/bbb, pathType: Prefix, backend: {service: {name: aaa-bbb, port: {number: 8080}}}}
        - host: rule-slash.paths.test
          http:
            paths:
              - {path: /aaa/bbb/, pathType: Prefix, backend: {service: {name: aaa-bbb-slash, port: {number: 8080}}}}
        - host: two.paths.test
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: root, port: {number: 8080}}}}
              - {path: /aaa, pathType: Prefix, backend: {service: {name: aaa, port: {number: 8080}}}}
        - host: three.paths.test
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: root, port: {number: 8080}}}}
              - {path: /aaa, pathType: Prefix, backend: {service: {name: aaa, port: {number: 8080}}}}
              - {path: /aaa/bbb, pathType: Prefix, backend: {service: {name: aaa-bbb, port: {number: 8080}}}}
        - host: only-aaa.paths.test
          http:
            paths:
              - {path: /aaa, pathType: Prefix, backend: {service: {name: aaa, port: {number: 8080}}}}
        - host: mixed.paths.test
          http:
            paths:
              - {path: /foo, pathType: Prefix, backend: {service: {name: foo-prefix, port: {number: 8080}}}}
              - {path: /foo, pathType: Exact, backend: {service: {name: foo-exact, port: {number: 8080}}}}
        - host: impl.paths.test
          http:
            paths:
              - {path: /foo, pathType: ImplementationSpecific, backend: {service: {name: impl-foo, port: {number: 8080}}}}
    """
    Then The Ingress status shows the IP address or FQDN where it is exposed

  Scenario Outline: A request path is matched as the Kubernetes documentation's table says
    When I send a "GET" request to "http://<host><path>"
    Then the request must be answered by "<backend>"

    Examples:
      | host                   | path          | backend          |
      | root.paths.test        | /             | root             |
      | root.paths.test        | /any/thing    | root             |
      | exact.paths.test       | /foo          | foo-exact        |
      | exact.paths.test       | /bar          | default-svc      |
      | exact.paths.test       | /foo/         | default-svc      |
      | exact.paths.test       | /FOO          | default-svc      |
      | exact-slash.paths.test | /foo          | default-svc      |
      | exact-slash.paths.test | /foo/         | foo-slash-exact  |
      | prefix.paths.test      | /foo          | foo-prefix       |
      | prefix.paths.test      | /foo/         | foo-prefix       |
      | prefix.paths.test      | /foo/bar      | foo-prefix       |
      | prefix.paths.test      | /foobar       | default-svc      |
      | prefix-slash.paths.test | /foo         | foo-slash-prefix |
      | prefix-slash.paths.test | /foo/        | foo-slash-prefix |
      | elements.paths.test    | /aaa/bbb      | default-svc      |
      | subpath.paths.test     | /aaa/bbb      | aaa-bbb          |
      | rule-slash.paths.test  | /aaa/bbb      | aaa-bbb-slash    |
      | subpath.paths.test     | /aaa/bbb/     | aaa-bbb          |
      | subpath.paths.test     | /aaa/bbb/ccc  | aaa-bbb          |
      | subpath.paths.test     | /aaabbb       | default-svc      |
      | two.paths.test         | /aaa/ccc      | aaa              |
      | three.paths.test       | /aaa/bbb      | aaa-bbb          |
      | three.paths.test       | /ccc          | root             |
      | only-aaa.paths.test    | /ccc          | default-svc      |
      | mixed.paths.test       | /foo          | foo-exact        |
      | mixed.paths.test       | /foo/x        | foo-prefix       |
      | impl.paths.test        | /foo/bar      | impl-foo         |
      | impl.paths.test        | /foobar       | default-svc      |
      | exact.paths.test       | /foo?q=/bar   | foo-exact        |
