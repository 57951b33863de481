from smtpconn.cli.app import main

main()
