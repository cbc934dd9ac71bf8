import { misspelledVariables } from "@fleet/core/config";
import { workerSchema } from "../src/config";

/**
 * Kubernetes injects service-link variables for every Service in the
 * namespace (enableServiceLinks defaults to true and deploy/k8s does not turn it off): a
 * Service named `sftp` — the SFTP server an SFTP migration reads from or writes to — gives each
 * worker pod SFTP_SERVICE_HOST, SFTP_PORT=tcp://…, SFTP_PORT_22_TCP… None is a typo of a Fleet
 * variable; the worker logs "did you mean SMTP_PORT?" at every start.
 */
describe("misspelledVariables in a Kubernetes pod (found by review)", () => {
  it("does not warn about service-link variables Kubernetes injects", () => {
    const env = {
      SFTP_SERVICE_HOST: "10.96.0.12",
      SFTP_SERVICE_PORT: "22",
      SFTP_PORT: "tcp://10.96.0.12:22",
      SFTP_PORT_22_TCP: "tcp://10.96.0.12:22",
      SFTP_PORT_22_TCP_PROTO: "tcp",
      SFTP_PORT_22_TCP_PORT: "22",
      SFTP_PORT_22_TCP_ADDR: "10.96.0.12",
    };
    expect(misspelledVariables(workerSchema, env)).toEqual([]);
  });
});
